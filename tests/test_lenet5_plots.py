"""The run pictures: per-class error rates, ticks and the paper's line, probabilities under
the misclassified digits."""

import numpy as np
import pytest

from lenet5 import plots


def test_class_error_rates():
    counts = plots.confusion_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 2, 2]))
    np.testing.assert_allclose(plots.class_error_rates(counts)[:4], [0.5, 1 / 3, 0.0, 0.0])


def test_learning_curve_ticks_every_pass_and_draws_the_paper_line(tmp_path, monkeypatch):
    epochs = [{"epoch": e, "train_error": 0.1 / e, "test_error": 0.12 / e} for e in range(1, 8)]
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.learning_curve(epochs, tmp_path / "c.png")
    ax = figures[0].axes[0]
    assert list(ax.get_xticks()) == list(range(1, 8))
    lines = [line for line in ax.get_lines() if "paper" in line.get_label()]
    assert len(lines) == 1 and set(lines[0].get_ydata()) == {plots.PAPER_TEST_ERROR_PERCENT}


def test_confusion_picture_shows_counts_and_error_rates(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    labels = np.array([0, 0, 0, 0, 1, 1])
    plots.confusion_picture(labels, np.array([0, 0, 0, 1, 1, 1]), tmp_path / "m.png")
    fig = figures[0]
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"3", "1", "2"} <= texts
    right = fig.axes[0].child_axes  # the secondary y axis
    labels_right = [t.get_text() for a in right for t in a.get_yticklabels()]
    assert labels_right[:2] == ["25.0%", "0.0%"]


def test_misclassified_digits_carry_the_predicted_class_and_its_probability(tmp_path, monkeypatch):
    images = np.zeros((5, 28, 28), np.uint8)
    labels = np.array([0, 1, 2, 3, 4])
    predicted = np.array([0, 7, 2, 8, 4])
    seen = []

    def penalties(x):
        seen.append(len(x))
        y = np.full((len(x), 10), 50.0)
        y[:, 7] = y[:, 8] = 0.0  # 7 and 8 equally likely: 50% each
        return y

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    plots.misclassified_picture(images, labels, predicted, tmp_path / "w.png", penalties)
    assert seen == [2]  # only the misclassified digits are evaluated
    below = sorted(t.get_text() for ax in figures[0].axes for t in ax.texts)
    assert below == ["→ 7 (50%)", "→ 8 (50%)"]


@pytest.mark.parametrize("with_penalties", [False, True])
def test_write_all_writes_three_pngs(tmp_path, with_penalties):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    predicted = (labels + (np.arange(20) % 3 == 0)) % 10
    epochs = [{"epoch": 1, "train_error": 0.2, "test_error": 0.3}]
    penalties = (lambda x: rng.random((len(x), 10))) if with_penalties else None
    paths = plots.write_all(tmp_path, epochs, images, labels, predicted, penalties)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
