"""The pictures a training run leaves in its RUNDIR (matplotlib, Agg backend, atomic writes).

* ``learning_curve.png``: training and test error (%) per pass;
* ``confusion_matrix.png``: test confusion matrix (rows true, columns predicted);
* ``misclassified.png``: the misclassified test digits, each labelled "true->predicted"
  (the paper's Fig. 8).

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> p = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 2]))
>>> p.tolist()[1][:3]
[0, 1, 1]
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the non-GUI backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from codegen.writer import write_atomic  # noqa: E402

MAX_MISCLASSIFIED = 100


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[t, p] = number of digits of true class t predicted as p."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


def learning_curve(epochs: list, path: Path) -> None:
    """Training and test error (%) against the pass number."""
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [e["epoch"] for e in epochs]
    ax.plot(x, [100 * e["train_error"] for e in epochs], "o-", label="training set")
    ax.plot(x, [100 * e["test_error"] for e in epochs], "s-", label="test set")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training pass (epoch)")
    ax.set_ylabel("error rate (%)")
    ax.set_title("LeNet-5 learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def confusion_picture(labels, predicted, path: Path) -> None:
    counts = confusion_matrix(labels, predicted)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(np.log1p(counts), cmap="Blues")
    for t in range(10):
        for p in range(10):
            if counts[t, p]:
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion matrix ({int(np.trace(counts))}/{counts.sum()} correct)")
    fig.tight_layout()
    _save(fig, path)


def misclassified_picture(images, labels, predicted, path: Path) -> None:
    """Grid of (up to 100) misclassified digits, titled "true->predicted"."""
    wrong = np.flatnonzero(labels != predicted)
    shown = wrong[:MAX_MISCLASSIFIED]
    cols = 10
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05 + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel()[: len(shown)], shown, strict=True):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{labels[i]}->{predicted[i]}", fontsize=8)
    more = f", first {len(shown)} shown" if len(wrong) > len(shown) else ""
    fig.suptitle(f"{len(wrong)} misclassified test digits (true->predicted{more})", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def write_all(rundir, epochs, images, labels, predicted) -> dict:
    """All three pictures into ``rundir``; returns {name: path}."""
    rundir = Path(rundir)
    paths = {
        "learning_curve": rundir / "learning_curve.png",
        "confusion_matrix": rundir / "confusion_matrix.png",
        "misclassified": rundir / "misclassified.png",
    }
    learning_curve(epochs, paths["learning_curve"])
    confusion_picture(labels, predicted, paths["confusion_matrix"])
    misclassified_picture(images, labels, predicted, paths["misclassified"])
    return paths
