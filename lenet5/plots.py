"""The pictures a training run leaves in its RUNDIR (matplotlib, Agg backend, atomic writes).

* ``learning_curve.png``: training and test error (%) per pass, a tick at every pass, and
  the paper's test error as a reference line;
* ``confusion_matrix.png``: test confusion matrix (rows true, columns predicted) with the
  counts in every non-empty cell and each true class's error rate beside its row;
* ``misclassified.png``: the misclassified test digits (the paper's Fig. 8), each with its
  true class above and the predicted class with its probability under it.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> p = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 2]))
>>> p.tolist()[1][:3]
[0, 1, 1]
>>> class_error_rates(p)[:3].tolist()
[0.0, 0.5, 0.0]
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the non-GUI backend)

from codegen.writer import write_atomic  # noqa: E402
from lenet5.posterior import class_probabilities  # noqa: E402

MAX_MISCLASSIFIED = 100
#: LeCun et al. 1998: LeNet-5's test error on MNIST without distortions.
PAPER_TEST_ERROR_PERCENT = 0.95


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


def class_error_rates(counts: np.ndarray) -> np.ndarray:
    """Per true class: the fraction of its digits predicted as another class (0 when the
    class has no digits)."""
    totals = counts.sum(axis=1)
    wrong = totals - np.diag(counts)
    return np.divide(wrong, totals, out=np.zeros(len(totals)), where=totals > 0)


def learning_curve(epochs: list, path: Path) -> None:
    """Training and test error (%) against the pass number, with the paper's test error."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = [e["epoch"] for e in epochs]
    ax.plot(x, [100 * e["train_error"] for e in epochs], "o-", ms=4, label="training set")
    ax.plot(x, [100 * e["test_error"] for e in epochs], "s-", ms=4, label="test set")
    ax.axhline(
        PAPER_TEST_ERROR_PERCENT,
        color="grey",
        ls="--",
        lw=1,
        label=f"paper, full MNIST test set: {PAPER_TEST_ERROR_PERCENT}%",
    )
    ax.set_xticks(x or [1])  # one tick per pass: the schedule changes at given passes
    if len(x) > 30:  # too many to read: every fifth
        ax.set_xticks([t for t in x if t % 5 == 0 or t == 1])
    ax.set_xlim(0.5, max(x, default=1) + 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training pass (epoch)")
    ax.set_ylabel("error rate (%)")
    ax.set_title("LeNet-5 learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def confusion_picture(labels, predicted, path: Path) -> None:
    """Counts in every non-empty cell (white on dark cells), each true class's error rate
    to the right of its row."""
    counts = confusion_matrix(labels, predicted)
    errors = class_error_rates(counts)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    shade = np.log1p(counts)
    ax.imshow(shade, cmap="Blues")
    dark = 0.6 * shade.max() if shade.size else 0
    for t in range(10):
        for p in range(10):
            if counts[t, p]:
                ax.text(
                    p, t, str(counts[t, p]), ha="center", va="center", fontsize=10,
                    color="white" if shade[t, p] > dark else "black",
                )  # fmt: skip
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(10))
    right.set_yticklabels([f"{100 * e:.1f}%" for e in errors])
    right.set_ylabel("error rate of the true class")
    wrong = int(counts.sum() - np.trace(counts))
    ax.set_title(
        f"test confusion matrix: {wrong} of {counts.sum()} wrong "
        f"({100 * wrong / max(counts.sum(), 1):.2f}%)"
    )
    fig.tight_layout()
    _save(fig, path)


def misclassified_picture(
    images, labels, predicted, path: Path, penalties: Callable | None = None
) -> None:
    """Grid of (up to 100) misclassified digits: "true t" above each, the predicted class
    and its probability under the MAP criterion below (``penalties(images)`` gives the RBF
    penalties; without it only the class)."""
    wrong = np.flatnonzero(labels != predicted)
    shown = wrong[:MAX_MISCLASSIFIED]
    prob = None
    if penalties is not None and len(shown):
        prob = class_probabilities(penalties(images[shown]))
    cols = 10
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.45 + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes.ravel()[: len(shown)], shown, strict=True)):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"true {labels[i]}", fontsize=8, pad=2)
        below = f"→ {predicted[i]}"
        if prob is not None:
            below += f" ({100 * prob[k, predicted[i]]:.0f}%)"
        ax.text(0.5, -0.08, below, transform=ax.transAxes, ha="center", va="top", fontsize=8,
                color="firebrick")  # fmt: skip
    more = f", the first {len(shown)} shown" if len(wrong) > len(shown) else ""
    how = "; under each: predicted class (its probability)" if prob is not None else ""
    fig.suptitle(f"{len(wrong)} misclassified test digits{more}{how}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def write_all(rundir, epochs, images, labels, predicted, penalties=None) -> dict:
    """All three pictures into ``rundir``; returns {name: path}. ``penalties``, a function
    from uint8 images to their RBF penalties, puts probabilities under the misclassified
    digits."""
    rundir = Path(rundir)
    paths = {
        "learning_curve": rundir / "learning_curve.png",
        "confusion_matrix": rundir / "confusion_matrix.png",
        "misclassified": rundir / "misclassified.png",
    }
    learning_curve(epochs, paths["learning_curve"])
    confusion_picture(labels, predicted, paths["confusion_matrix"])
    misclassified_picture(images, labels, predicted, paths["misclassified"], penalties)
    return paths
