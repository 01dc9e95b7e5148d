"""MNIST for LeNet-5: IDX files, where to find them, and the paper's input scaling.

Where the data comes from (``resolve_data_dir``), in this order:

1. ``--data DIR`` (a directory holding the four standard IDX files, gzipped or not),
   or ``--data sample`` for the 5,000-digit sample bundled in ``lenet5/sample``;
2. the environment variable ``SYMCONV_MNIST`` (a directory, or ``sample``);
3. a download into the user cache (``pooch.os_cache("symconv")``), every file checked
   against its published MD5.  Without network the error says exactly what to do.

Images stay ``uint8`` in memory (47 MB for the 60,000 training digits); ``to_input``
converts one batch at a time to the network's 32x32 float input, which keeps a full
MNIST run far under its 500 MB budget.

Examples
--------
>>> d = load_mnist("sample")
>>> d.train_images.shape, d.test_images.shape, d.train_labels.dtype
((4000, 28, 28), (1000, 28, 28), dtype('int64'))
>>> x = to_input(d.test_images[:2], np.float64)
>>> x.shape, float(x.min()) >= WHITE, float(x.max()) <= BLACK
((2, 1, 32, 32), True, True)
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The paper's input scaling (LeCun et al. 1998, Sec. II-B), from the generated spec:
#: background (white, pixel 0) -> WHITE = -0.1, ink (black, pixel 255) -> BLACK = 1.175,
#: which makes the mean input roughly 0 (the paper also claims variance roughly 1, which
#: two-level pixels cannot reach: see `derive show lenet5.input`).  MNIST digits are
#: 28x28; LeNet-5 takes 32x32, the digit centred with PAD = 2 pixels of white margin.
from codegen.writer import write_atomic  # noqa: E402
from generated.lenet5_spec import BLACK, PAD, WHITE  # noqa: E402

#: The four standard files and their published MD5 checksums (of the .gz files).
MNIST_FILES = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: Mirrors of the original files, tried in order (yann.lecun.com itself is often down).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
ENV_VAR = "SYMCONV_MNIST"
SAMPLE = "sample"
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent; the message names the file."""


# ----------------------------------------------------------------------------- IDX format


#: Deflate expands a byte to at most 1032 bytes: a gzip file announcing more data than
#: that (plus this slack for its headers) is corrupt, rejected before decompressing.
DEFLATE_MAX_RATIO = 1032
_GZIP_SLACK = 1 << 16
#: Bytes read (decompressed) at a time: memory follows the data actually present, never
#: the size a header announces.
_CHUNK = 1 << 24


def _read_exactly(f, nbytes: int, path: Path) -> bytearray:
    """``nbytes`` from ``f`` in bounded chunks (DataError naming ``path`` if it ends first)."""
    out = bytearray()
    while len(out) < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not, detected from its content) into an array.

    The header comes first: two zero bytes, a known type code, the number of
    dimensions and the dimensions, whose product (in Python integers: no overflow) sets
    the data size.  A file that cannot hold that many bytes is rejected before any
    data is read or decompressed; decompression stops at the announced size, and the
    file must end exactly there.  Every failure (also an ``OSError`` while reading, a
    corrupt gzip or deflate stream) is a ``DataError`` naming the file.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
    >>> write_idx(p, np.arange(5, dtype=np.uint8))
    >>> read_idx(p)
    array([0, 1, 2, 3, 4], dtype=uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    gzipped = False
    try:
        with open(path, "rb") as raw:
            stored = os.fstat(raw.fileno()).st_size
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not gzipped:
                return _read_idx_stream(raw, path, stored, stored)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(f, path, None, DEFLATE_MAX_RATIO * stored + _GZIP_SLACK)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, corrupt or truncated gzip
        what = "corrupt or truncated gzip data" if gzipped else "cannot be read"
        raise DataError(f"{path}: {what} ({type(exc).__name__}: {exc})") from exc


def _read_idx_stream(f, path: Path, size: int | None, most: int) -> np.ndarray:
    """The IDX array from the open stream ``f``; ``size``: its exact byte count when known
    (uncompressed), ``most``: the most bytes it can hold."""
    head = _read_exactly(f, 4, path)
    if len(head) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(head)} bytes, no complete header)")
    if head[0] != 0 or head[1] != 0:
        raise DataError(
            f"{path}: bad IDX magic number {bytes(head).hex()} (must start with two zero bytes)"
        )
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim < 1:
        raise DataError(f"{path}: IDX file declares {ndim} dimensions")
    header = 4 + 4 * ndim
    raw_dims = _read_exactly(f, 4 * ndim, path)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({4 + len(raw_dims)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw_dims[4 * k : 4 * k + 4], "big") for k in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: exact
    if size is not None and size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: dimensions {dims} need {expected} bytes, file has {size}")
    if expected > most:
        raise DataError(
            f"{path}: dimensions {dims} need {expected} bytes, more than a gzip file of its "
            "size can hold (corrupt header)"
        )
    data = _read_exactly(f, expected - header, path)
    if len(data) < expected - header:
        raise DataError(
            f"{path}: truncated: dimensions {dims} need {expected} bytes, file has "
            f"{header + len(data)}"
        )
    if size is None and f.read(1):
        raise DataError(f"{path}: has trailing bytes: dimensions {dims} need {expected} bytes")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, atomically; gzipped (reproducibly) if ``path`` ends in .gz.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "y-idx3-ubyte")
    >>> write_idx(p, np.zeros((2, 3, 3), np.uint8))
    >>> read_idx(p).shape
    (2, 3, 3)
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): c for c, dt in _IDX_DTYPES.items()}
    if array.dtype not in codes:
        raise TypeError(f"write_idx: array dtype {array.dtype} has no IDX type code")
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, ">u4").tobytes()
    body = header + np.ascontiguousarray(array, array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        body = gzip.compress(body, compresslevel=9, mtime=0)  # mtime=0: byte-identical reruns
    write_atomic(Path(path), body)


# ----------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class MNIST:
    """Training and test digits (uint8, N x 28 x 28), labels (int64), and provenance."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    md5: dict


def find_file(directory: Path, name: str) -> Path:
    """The file ``name`` or ``name.gz`` in ``directory`` (DataError naming both if absent)."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: missing MNIST file {name}.gz (or uncompressed {name})")


def load_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, rows, cols) uint8 and labels (N,) int64 in 0..9, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected a 3-d unsigned-byte image file, "
            f"got {images.ndim}-d {images.dtype}"
        )
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected 28x28 images, got {images.shape[1:]}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path}: expected a 1-d unsigned-byte label file, "
            f"got {labels.ndim}-d {labels.dtype}"
        )
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images (0 digits to train or test on)")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels.astype(np.int64)


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's bytes as stored (for the standard .gz files: the published sums)."""
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    return h.hexdigest()


def data_md5(directory) -> dict:
    """``{file name: md5}`` of the four files a run reads (recorded in summary.json)."""
    directory = Path(directory)
    return {(p := find_file(directory, n)).name: file_md5(p) for n in MNIST_FILES}


def load_dir(directory) -> MNIST:
    """Load the four MNIST files from ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--data {directory}: not a directory")
    train = load_pair(
        *(find_file(directory, f"train-{k}") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    )
    test = load_pair(
        *(find_file(directory, f"t10k-{k}") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    )
    return MNIST(*train, *test, source=str(directory), md5=data_md5(directory))


def load_mnist(data=None) -> MNIST:
    """Load MNIST from ``data`` (a directory, ``"sample"`` or None; see the module docstring)."""
    return load_dir(resolve_data_dir(data))


# ----------------------------------------------------------------------------- locating it


def resolve_data_dir(data=None, *, cache=None, mirrors=MIRRORS) -> Path:
    """The directory to read MNIST from: ``data``, else ``$SYMCONV_MNIST``, else the download cache.

    >>> resolve_data_dir("sample") == SAMPLE_DIR
    True
    """
    if data is None:
        data = os.environ.get(ENV_VAR) or None
    if data is None:
        return download(cache=cache, mirrors=mirrors)
    if str(data) == SAMPLE:
        return SAMPLE_DIR
    path = Path(data).expanduser()
    if not path.is_dir():
        raise DataError(
            f"--data {data}: not a directory (give the directory holding the four MNIST IDX "
            f"files, or 'sample' for the bundled sample)"
        )
    return path


def default_cache() -> Path:
    """The per-user download cache (``~/.cache/symconv/mnist`` on Linux)."""
    import pooch

    return Path(pooch.os_cache("symconv")) / "mnist"


def download(cache=None, mirrors=MIRRORS) -> Path:
    """Fetch the four files into ``cache`` (MD5-checked; skipped when already there)."""
    import pooch

    cache = Path(cache) if cache is not None else default_cache()
    errors = []
    for name, md5 in MNIST_FILES.items():
        for mirror in mirrors:
            try:
                pooch.retrieve(
                    mirror + name + ".gz",
                    known_hash=f"md5:{md5}",
                    fname=name + ".gz",
                    path=cache,
                    downloader=pooch.HTTPDownloader(timeout=30, progressbar=False),
                )
                break
            except Exception as exc:  # network errors come from requests/urllib3 and pooch
                errors.append(f"{mirror}{name}.gz: {type(exc).__name__}: {exc}")
        else:
            raise DataError(_no_data_message(cache, errors))
    return cache


def _no_data_message(cache: Path, errors: list) -> str:
    names = ", ".join(f"{n}.gz" for n in MNIST_FILES)
    return (
        "MNIST is not available: no --data given, $SYMCONV_MNIST is not set, and the download "
        f"into {cache} failed:\n  " + "\n  ".join(errors[-2:]) + "\n"
        "Do one of:\n"
        f"  1. put the four files ({names}) in a directory DIR and pass --data DIR\n"
        f"     (or export {ENV_VAR}=DIR);\n"
        "  2. connect to the internet and rerun: the files are downloaded and MD5-checked once;\n"
        "  3. pass --data sample to use the 5,000-digit sample bundled with symconv."
    )


# ----------------------------------------------------------------------------- preprocessing


def to_input(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 digits (N, 28, 28) -> network input (N, 1, 32, 32): 2-pixel white margin, scaled.

    Pixel p in 0..255 maps linearly to WHITE + (BLACK - WHITE) * p / 255.

    >>> x = to_input(np.array([[[0] * 28] * 27 + [[255] * 28]], np.uint8), np.float64)
    >>> x.shape, x[0, 0, 0, 0].item(), x[0, 0, 29, 2].item(), x[0, 0, 29, 1].item()
    ((1, 1, 32, 32), -0.1, 1.175, -0.1)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise TypeError(
            f"to_input: images must be uint8 (N, H, W), got {images.dtype} {images.shape}"
        )
    scale = (BLACK - WHITE) / 255.0
    out = np.full(
        (images.shape[0], 1, images.shape[1] + 2 * PAD, images.shape[2] + 2 * PAD), WHITE, dtype
    )
    out[:, 0, PAD:-PAD, PAD:-PAD] = WHITE + scale * images.astype(dtype)
    return out
