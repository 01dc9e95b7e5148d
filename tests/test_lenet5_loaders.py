"""Hostile files for the checkpoint loader, the IDX reader and the PNG reader.

Each reproducer of a defect found by an adversarial pass is a test here: every bad file
is a CheckpointError / DataError naming the file (and the member), never another
exception, and nothing allocates what a header merely announces.
"""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hardening_support import (
    members,
    memory_limit,
    npy,
    npy_header,
    valid_checkpoint,
    write_zip,
)

from lenet5 import checkpoint, data
from lenet5.checkpoint import CheckpointError
from lenet5.cli import main, read_png
from lenet5.data import DataError, read_idx, write_idx

META = "meta.npy"


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture
def good(tmp_path) -> Path:
    return valid_checkpoint(tmp_path / "good.npz")


def _with(tmp_path, good, replace=None, compress=False) -> Path:
    """A copy of the checkpoint ``good`` with the members ``{name: bytes}`` replaced."""
    files = {**members(good), **(replace or {})}
    return write_zip(tmp_path / "bad.npz", files, compress)


def _meta_of(good) -> dict:
    return json.loads(str(np.load(good)["meta"]))


def test_valid_checkpoint_loads(good):
    ck = checkpoint.load(good)
    assert ck.meta["epoch"] == 1 and ck.hess is not None and ck.velocity is None


def test_compressed_checkpoint_loads(tmp_path, good):
    """A deflated npz (np.savez_compressed) is a valid checkpoint too."""
    ck = checkpoint.load(_with(tmp_path, good, compress=True))
    np.testing.assert_array_equal(ck.params["F6.w"], checkpoint.load(good).params["F6.w"])


def test_corrupt_deflate_stream(tmp_path, good):
    path = _with(tmp_path, good, compress=True)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"param/F6.w.npy") + len("param/F6.w.npy")
    for k in range(start + 200, start + 400):
        raw[k] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.load(path)


def test_flipped_bit_in_stored_member_fails_its_crc(tmp_path, good):
    raw = bytearray(good.read_bytes())
    raw[raw.index(b"param/F6.w.npy") + 500] ^= 1
    good.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(good)


def test_known_member_declaring_a_huge_shape(tmp_path, good):
    bad = _with(tmp_path, good, {"param/F6.w.npy": npy_header((10**12,)) + bytes(64)})
    with memory_limit(64), pytest.raises(CheckpointError, match=r"param/F6.w.npy has shape"):
        checkpoint.load(bad)


def test_unknown_members_are_never_read(tmp_path, good):
    """An extra member declaring 10**12 floats, and a compressed 128 MiB one, cost nothing."""
    block = npy_header((2**26,)) + bytes(2**20)
    files = members(good)
    files["huge.npy"] = npy_header((10**12,))
    path = write_zip(tmp_path / "extra.npz", files)
    with memory_limit(64):
        assert checkpoint.load(path).meta["epoch"] == 1
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("bomb.npy", "w", force_zip64=True) as f:
            f.write(block)
            for _ in range(127):
                f.write(bytes(2**20))
    assert path.stat().st_size < 2 * 2**20
    with memory_limit(64):
        assert checkpoint.load(path).meta["epoch"] == 1


def test_known_member_with_a_compressed_tail_is_not_inflated(tmp_path, good):
    """A right-shaped member followed by 128 MiB of compressed zeros: rejected unread."""
    files = members(good)
    path = tmp_path / "tail.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, content in files.items():
            if name != "param/C1.b.npy":
                z.writestr(name, content)
        with z.open("param/C1.b.npy", "w", force_zip64=True) as f:
            f.write(files["param/C1.b.npy"])
            for _ in range(128):
                f.write(bytes(2**20))
    with memory_limit(64), pytest.raises(CheckpointError, match="trailing bytes"):
        checkpoint.load(path)


#: A version 1.0 .npy header whose dict never closes: numpy's tokenizer raises TokenError.
UNCLOSED_HEADER = b"\x93NUMPY\x01\x00v\x00" + b"{'descr': '<f4', 'shape': (3,".ljust(117) + b"\n"


@pytest.mark.parametrize(
    "member,content,message",
    [
        ("param/C1.w.npy", npy(np.zeros((6, 1, 5, 5), np.int64)), "has dtype int64"),
        ("param/C1.w.npy", npy(np.zeros((6, 1, 5, 4), np.float32)), "has shape"),
        ("param/C1.w.npy", npy_header((6, 1, 5, 5)) + bytes(10), "truncated"),
        ("param/C1.w.npy", b"not an npy file at all", "not a .npy array"),
        ("param/C1.w.npy", UNCLOSED_HEADER, "not a .npy array"),
        ("param/C1.w.npy", npy_header((6, 1, 5, 5), "|O") + bytes(64), "has dtype object"),
        ("param/C1.w.npy", None, "param/C1.w.npy is missing"),
        ("hess/C1.w.npy", npy(np.zeros((6, 1, 5, 4), np.float32)), "hess/C1.w.npy has shape"),
        ("hess/C1.w.npy", npy(np.zeros((6, 1, 5, 5), np.float64)), "has dtype float64"),
        ("hess/C1.w.npy", None, "hess/C1.w.npy is missing"),
        (META, None, "meta.npy is missing"),
        (META, npy(np.zeros(3)), "meta.npy"),
        (META, npy(np.array("not json")), "meta.npy is not JSON"),
    ],
)
def test_bad_members_name_the_file_and_the_member(tmp_path, good, member, content, message):
    files = members(good)
    if content is None:
        files.pop(member)
    else:
        files[member] = content
    path = write_zip(tmp_path / "bad.npz", files)
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: [m], "must hold a JSON object, got list"),
        (lambda m: "text", "must hold a JSON object, got str"),
        (lambda m: {k: v for k, v in m.items() if k != "epoch"}, "'epoch' must be a int"),
        (lambda m: {**m, "epoch": "1"}, "'epoch' must be a int"),
        (lambda m: {**m, "epoch": -1}, "'epoch' is negative"),
        (lambda m: {**m, "config": [1]}, "'config' must be a dict"),
        (lambda m: {**m, "history": {"a": 1}}, "'history' must be a list"),
        (lambda m: {**m, "history": [1, 2]}, "'history' must list objects"),
        (lambda m: {**m, "partial": 3}, "'partial' must be a dict"),
    ],
)
def test_bad_metadata(tmp_path, good, change, message):
    meta = change(_meta_of(good))
    path = _with(tmp_path, good, {META: npy(np.array(json.dumps(meta)))})
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("group", ["param", "hess"])
def test_non_finite_values_are_refused(tmp_path, good, value, group):
    a = np.load(good)[f"{group}/C1.b"].copy()
    a[2] = value
    path = _with(tmp_path, good, {f"{group}/C1.b.npy": npy(a)})
    with pytest.raises(CheckpointError, match=rf"{group}/C1.b.npy holds NaN or infinite"):
        checkpoint.load(path)


def test_cli_refuses_non_finite_checkpoints(tmp_path, good, capsys):
    a = np.load(good)["param/C1.b"].copy()
    a[0] = np.nan
    path = _with(tmp_path, good, {"param/C1.b.npy": npy(a)})
    argv = ["evaluate", "--checkpoint", str(path), "--data", "sample", "--backend", "numpy"]
    assert main(argv) == 2
    assert "param/C1.b.npy holds NaN" in capsys.readouterr().err


def test_not_a_zip_and_missing(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 but then nothing")
    for path in (tmp_path / "junk.npz", tmp_path / "absent.npz", tmp_path):
        with pytest.raises(CheckpointError, match=str(path)):
            checkpoint.load(path)


# ----------------------------------------------------------------------------- IDX files


def _idx_header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def test_corrupt_deflate_stream_in_idx(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 255, (50, 28, 28), np.uint8))
    raw = bytearray(path.read_bytes())
    for k in range(40, 80):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{path}: corrupt or truncated gzip"):
        read_idx(path)


def test_header_overflowing_int64_is_truncated_not_empty(tmp_path):
    """(2**16)**4 wrapped to 0 in int64: a header-only file passed the size check."""
    path = tmp_path / "wrap-idx4-ubyte"
    path.write_bytes(_idx_header(0x08, [2**16] * 4))
    with pytest.raises(DataError, match=r"truncated: dimensions \(65536, 65536"):
        read_idx(path)


def test_gz_bomb_is_not_decompressed_beyond_the_header(tmp_path):
    """A small .gz whose IDX header announces 10 digits followed by 128 MiB of zeros."""
    path = tmp_path / "bomb-idx3-ubyte.gz"
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip container
    body = [comp.compress(_idx_header(0x08, [10, 28, 28]) + bytes(10 * 784))]
    body += [comp.compress(bytes(2**20)) for _ in range(128)]
    path.write_bytes(b"".join(body) + comp.flush())
    assert path.stat().st_size < 2**20
    with memory_limit(48), pytest.raises(DataError, match="has trailing bytes"):
        read_idx(path)


def test_header_announcing_more_than_deflate_can_hold(tmp_path):
    path = tmp_path / "big-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(0x08, [60000, 2800, 2800])))
    with memory_limit(64), pytest.raises(DataError, match="more than a gzip file of its size"):
        read_idx(path)


def test_os_error_while_reading_is_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "x-idx1-ubyte"
    write_idx(path, np.arange(5, dtype=np.uint8))

    class Failing:
        def __init__(self, *a):
            pass

        def __enter__(self):
            raise OSError(5, "Input/output error")

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(data, "open", Failing, raising=False)
    with pytest.raises(DataError, match=rf"{path}: cannot be read .*Input/output error"):
        read_idx(path)


def _mnist_dir(tmp_path, n_train, n_test) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28), np.uint8)
        )
        write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8)
        )
    return tmp_path


@pytest.mark.parametrize("n_train,n_test,bad", [(0, 20, "train-images"), (20, 0, "t10k-images")])
def test_empty_sets_are_data_errors(tmp_path, capsys, n_train, n_test, bad):
    d = _mnist_dir(tmp_path / "d", n_train, n_test)
    argv = ["train", "--data", str(d), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*argv, "--no-progress", "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert bad in err and "holds no images" in err
    assert not (tmp_path / "run" / "summary.json").exists()


# ----------------------------------------------------------------------------- PNG images


def _digit() -> np.ndarray:
    """A 40x40 white-on-black '7'-like stroke image (uint8), ink 255."""
    img = np.zeros((40, 40), np.uint8)
    img[6:10, 8:32] = 255
    for k in range(24):
        img[10 + k, 30 - k // 2 : 34 - k // 2] = 255
    return img


def _save(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_16_bit_gray_is_scaled_not_clipped(tmp_path):
    gray8 = _digit()
    ref = read_png(_save(tmp_path / "g8.png", gray8))
    g16 = _save(tmp_path / "g16.png", gray8.astype(np.uint16) * 257)
    from PIL import Image

    assert Image.open(g16).mode.startswith("I")
    got = read_png(g16)
    np.testing.assert_array_equal(got, ref)
    assert len(np.unique(got)) > 2  # clipping left two gray levels


def test_digit_in_the_alpha_channel_alone(tmp_path, capsys):
    """Black ink, the digit only in alpha (transparent background): composited on white."""
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = _digit()
    got = read_png(_save(tmp_path / "alpha.png", rgba))
    ref = read_png(_save(tmp_path / "paper.png", 255 - _digit()))  # black ink on white
    np.testing.assert_array_equal(got, ref)
    assert got.max() > 200 and "blank" not in capsys.readouterr().err


def test_blank_image_warns(tmp_path, capsys):
    read_png(_save(tmp_path / "white.png", np.full((30, 30), 255, np.uint8)))
    assert "the image is blank" in capsys.readouterr().err


def _png_header_only(path, width, height) -> Path:
    """A PNG whose IHDR announces width x height (8-bit gray) and whose IDAT is tiny."""
    import struct

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    body += chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(body)
    return path


@pytest.mark.parametrize("side", [5000, 20000])
def test_huge_image_is_refused_before_decoding(tmp_path, side):
    path = _png_header_only(tmp_path / "huge.png", side, side)
    with (
        memory_limit(64),
        pytest.raises(
            DataError, match=rf"{path}: image of .*more than the 16777216 pixels predict reads"
        ),
    ):
        read_png(path)


def test_cli_predict_exit_codes(tmp_path, good, capsys):
    huge = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    argv = ["predict", "--checkpoint", str(good), "--backend", "numpy"]
    assert main([*argv, str(huge)]) == 2
    assert "pixels predict reads" in capsys.readouterr().err
    digit = _save(tmp_path / "d.png", _digit())
    assert main([*argv, str(digit)]) == 0
    assert capsys.readouterr().out.startswith(f"{digit}: ")
