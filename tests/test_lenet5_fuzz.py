"""Fuzzers of the three file readers: the IDX reader, the checkpoint loader, the PNG reader.

Each draws a structurally valid file, applies one corruption (a changed header field,
a flipped byte, a truncation, appended bytes, a size bomb) and requires one of two
outcomes, under an address-space limit: the documented error (DataError /
CheckpointError naming the file), or a correct result (checked against an oracle).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib

import numpy as np
import pytest
from hardening_support import members, memory_limit, npy_header, valid_checkpoint, write_zip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenet5 import checkpoint
from lenet5.checkpoint import CheckpointError
from lenet5.cli import read_png
from lenet5.data import _IDX_DTYPES, DataError, read_idx

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Address space each read may add: far below what any bomb drawn here announces.
LIMIT_MB = 128


# ----------------------------------------------------------------------------- IDX


@st.composite
def idx_files(draw):
    """(file bytes, the decompressed IDX bytes it should hold or None, gzipped?)."""
    code = draw(st.sampled_from(sorted(_IDX_DTYPES)))
    dims = draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
    dtype = _IDX_DTYPES[code]
    n = int(np.prod(dims)) * dtype.itemsize
    body = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    body += bytes(draw(st.binary(min_size=n, max_size=n)))
    header = 4 + 4 * len(dims)
    kind = draw(st.sampled_from(["none", "field", "dims", "bomb", "truncate", "append"]))
    if kind == "field":  # one header byte changed
        pos = draw(st.integers(0, header - 1))
        body = body[:pos] + bytes([draw(st.integers(0, 255))]) + body[pos + 1 :]
    elif kind == "dims":  # one dimension replaced, possibly overflowing int64 products
        k = draw(st.integers(0, len(dims) - 1))
        value = draw(st.sampled_from([0, 1, 7, 2**16, 2**31, 2**32 - 1]))
        body = body[: 4 + 4 * k] + value.to_bytes(4, "big") + body[8 + 4 * k :]
    elif kind == "bomb":  # a small header followed by a lot of (compressible) zeros
        body += bytes(draw(st.sampled_from([2**20, 2**24])))
    elif kind == "truncate":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    elif kind == "append":
        body += draw(st.binary(min_size=1, max_size=8))
    gz = draw(st.booleans()) or kind == "bomb"
    stored = gzip.compress(body, compresslevel=1, mtime=0) if gz else body
    if gz and draw(st.booleans()):  # damage the compressed stream itself
        where = draw(st.sampled_from(["flip", "truncate"]))
        pos = draw(st.integers(10, max(len(stored) - 1, 10)))
        if where == "flip" and pos < len(stored):
            stored = stored[:pos] + bytes([stored[pos] ^ 0xFF]) + stored[pos + 1 :]
        else:
            stored = stored[:pos]
    return stored


def _idx_bytes(a: np.ndarray, code: int) -> bytes:
    head = bytes([0, 0, code, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return head + a.astype(_IDX_DTYPES[code]).tobytes()


@FUZZ
@given(stored=idx_files())
def test_fuzz_idx_reader(tmp_path, stored):
    path = tmp_path / "fuzz-idx"
    path.write_bytes(stored)
    try:
        with memory_limit(LIMIT_MB):
            a = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    # A result must be exactly what the file holds: re-encoding it gives the file back.
    raw = gzip.decompress(stored) if stored[:2] == b"\x1f\x8b" else stored
    assert _idx_bytes(a, raw[2]) == raw


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("ck")
    path = valid_checkpoint(d / "c.npz", velocity=True)
    files = members(path)
    return {
        "stored": path.read_bytes(),
        "deflated": write_zip(io.BytesIO(), files, compress=True).getvalue(),
        "files": files,
        "params": checkpoint.load(path).params,
    }


@st.composite
def checkpoint_mutations(draw):
    layout = draw(st.sampled_from(["stored", "deflated"]))
    kind = draw(st.sampled_from(["flip", "truncate", "append", "header", "member"]))
    return layout, kind, draw(st.data())


def _mutate(ck: dict, layout, kind, data) -> bytes:
    blob = ck[layout]
    if kind == "flip":
        pos = data.draw(st.integers(0, len(blob) - 1))
        return blob[:pos] + bytes([blob[pos] ^ data.draw(st.integers(1, 255))]) + blob[pos + 1 :]
    if kind == "truncate":
        return blob[: data.draw(st.integers(0, len(blob) - 1))]
    if kind == "append":
        return blob + data.draw(st.binary(min_size=1, max_size=64))
    files = dict(ck["files"])
    name = data.draw(st.sampled_from(sorted(files)))
    if kind == "header":  # the member declares another shape or dtype (data unchanged)
        shape = data.draw(
            st.sampled_from([(10**12,), (2**31, 2**31), (), (3,), (6, 1, 5, 5), (84, 120)])
        )
        dtype = data.draw(st.sampled_from(["<f4", "<f8", ">f4", "<i8", "|O", "<U10"]))
        files[name] = npy_header(shape, dtype) + files[name][128:]
    else:  # the member replaced by random bytes, or removed
        if data.draw(st.booleans()):
            files[name] = data.draw(st.binary(max_size=300))
        else:
            del files[name]
    return write_zip(io.BytesIO(), files, compress=layout == "deflated").getvalue()


@FUZZ
@given(case=checkpoint_mutations())
def test_fuzz_checkpoint_loader(tmp_path, checkpoint_bytes, case):
    layout, kind, data = case
    path = tmp_path / "fuzz.npz"
    path.write_bytes(_mutate(checkpoint_bytes, layout, kind, data))
    try:
        with memory_limit(LIMIT_MB):
            ck = checkpoint.load(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return
    # Loaded despite the change (e.g. a flipped timestamp, appended bytes): the values
    # must be exactly the saved ones (the zip's CRC guards the data).
    for name, want in checkpoint_bytes["params"].items():
        np.testing.assert_array_equal(ck.params[name], want)
        assert ck.params[name].dtype == want.dtype


# ----------------------------------------------------------------------------- PNG


def _png(array: np.ndarray, mode: str | None) -> bytes:
    from PIL import Image

    im = Image.fromarray(array)
    if mode is not None:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@st.composite
def png_files(draw):
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    source = draw(st.sampled_from(["L", "LA", "RGB", "RGBA", "P", "1", "I;16"]))
    if source == "I;16":
        blob = _png(rng.integers(0, 2**16, (h, w), dtype=np.uint16), None)
    elif source in ("LA", "RGBA"):
        blob = _png(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), source)
    else:
        blob = _png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), source)
    kind = draw(st.sampled_from(["none", "flip", "truncate", "size", "append"]))
    if kind == "flip":
        pos = draw(st.integers(8, len(blob) - 1))
        blob = blob[:pos] + bytes([blob[pos] ^ draw(st.integers(1, 255))]) + blob[pos + 1 :]
    elif kind == "truncate":
        blob = blob[: draw(st.integers(0, len(blob) - 1))]
    elif kind == "size":  # IHDR width/height (CRC fixed so the decoder believes it)
        width = draw(st.sampled_from([1, 4097, 30000, 2**31 - 1]))
        height = draw(st.sampled_from([1, 4097, 30000, 2**31 - 1]))
        ihdr = b"IHDR" + struct.pack(">II", width, height) + blob[24:29]
        blob = blob[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + blob[33:]
    elif kind == "append":
        blob += draw(st.binary(min_size=1, max_size=32))
    return kind, blob


def test_a_png_chunk_longer_than_the_file_is_refused_before_pillow_reads_it(tmp_path):
    """Found by the fuzzer: one flipped byte of a 1x1 PNG made its IDAT declare 151 MB,
    which Pillow allocated (MemoryError under the memory limit)."""
    blob = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00"
        b"\x00\x00:~\x9bU\t\x00\x00\nIDATx\x9cc\xa8\x07\x00\x00\x81\x00\x80\xd3\x94SJ"
        b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )
    path = tmp_path / "flipped.png"
    path.write_bytes(blob)
    with memory_limit(LIMIT_MB), pytest.raises(DataError, match=r"chunk 'IDAT' .* more than"):
        read_png(path)


@FUZZ
@given(case=png_files())
def test_fuzz_png_reader(tmp_path, case):
    kind, blob = case
    path = tmp_path / "fuzz.png"
    path.write_bytes(blob)
    try:
        with memory_limit(LIMIT_MB):
            pixels = read_png(path)
    except DataError as exc:
        assert kind != "none", f"a valid PNG was refused: {exc}"
        assert str(path) in str(exc)
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
