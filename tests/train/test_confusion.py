"""train.confusion: per-class numbers against ones counted by hand, and the pictures written for
2, 10 and 100 classes (matrix for few classes, most confused pairs for many)."""

import numpy as np
import pytest

from train import confusion

# A small case counted by hand: 4 classes, the last one never seen and never predicted.
NAMES = ("cat", "dog", "bird", "fish")
LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDICTED = np.array([0, 1, 0, 1, 2, 2])
COUNTS = [[2, 1, 0, 0],  # cats: 2 right, 1 called dog
          [0, 1, 1, 0],  # dogs: 1 right, 1 called bird
          [0, 0, 1, 0],  # the bird: right
          [0, 0, 0, 0]]


def _one_hot(predicted, k, confidence=0.9):
    p = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_counts_and_per_class_table_match_hand_counts():
    np.testing.assert_array_equal(confusion.confusion_matrix(LABELS, PREDICTED, 4), COUNTS)
    table = confusion.per_class_table(LABELS, PREDICTED, NAMES)
    # precision = right / predicted as the class; recall = right / images of the class
    expected = [("cat", 2 / 2, 2 / 3, 3, 2), ("dog", 1 / 2, 1 / 2, 2, 2),
                ("bird", 1 / 2, 1 / 1, 1, 2), ("fish", 0.0, 0.0, 0, 0)]
    assert [r["class"] for r in table] == [e[0] for e in expected]
    for row, (_, precision, recall, support, predicted) in zip(table, expected):
        assert (row["precision"], row["recall"]) == pytest.approx((precision, recall))
        assert (row["support"], row["predicted"]) == (support, predicted)
    pairs = confusion.most_confused(LABELS, PREDICTED, NAMES)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("dog", "bird", 1), ("cat", "dog", 1)]  # 1/2 of the dogs before 1/3 of the cats
    assert [p["share"] for p in pairs] == pytest.approx([1 / 2, 1 / 3])


def test_report_summary_numbers(tmp_path):
    report = confusion.write_error_report(tmp_path, LABELS, _one_hot(PREDICTED, 4), NAMES)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # fish absent
    assert report["worst_class"] == "dog"
    assert report["images"] == 6
    assert set(report["figures"]) == {"confusion"}  # no images given: no mistakes grid
    assert (tmp_path / "confusion.png").stat().st_size > 0


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*from 0 to 7"):
        confusion.confusion_matrix([0, 7], [0, 1], 4)
    with pytest.raises(ValueError, match=r"probabilities must be \(N, classes\) = \(6, 4\)"):
        confusion.write_error_report(tmp_path, LABELS, _one_hot(PREDICTED, 4)[:, :3], NAMES)


def test_mistakes_grid_shows_the_most_confident_wrong_predictions_first():
    labels = np.array([0, 1, 0, 1, 0])
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4], [0.95, 0.05], [0.1, 0.9], [0.3, 0.7]])
    images = np.zeros((5, 8, 8, 1), np.uint8)
    fig = confusion.mistakes_figure(images, labels, probabilities, ("cat", "dog"), n=2)
    titles = [ax.get_title() for ax in fig.axes]
    # wrong: 0 (dog 0.80), 1 (cat 0.60), 4 (dog 0.70): the two most confident are 0 and 4
    assert titles == ["true: cat\npred: dog 0.80", "true: cat\npred: dog 0.70"]
    assert "2 of 3 wrong in 5 images" in fig.get_suptitle()


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, path
    return data


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_pictures_written_for_few_and_many_classes(tmp_path, classes):
    rng = np.random.default_rng(classes)
    n = 20 * classes
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sizes = [(rng.integers(16, 40), rng.integers(16, 40)) for _ in range(n)]  # mixed sizes
    images = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for h, w in sizes]
    names = [f"class {i}" for i in range(classes)]
    report = confusion.write_error_report(tmp_path, labels, probabilities, names, images)
    _png(tmp_path / "confusion.png")
    _png(tmp_path / "mistakes.png")
    assert len(report["per_class"]) == classes
    assert sum(r["support"] for r in report["per_class"]) == n
    fig = confusion.confusion_figure(labels, probabilities, names)
    (ax, *rest) = fig.axes
    if classes <= confusion.MATRIX_MAX_CLASSES:  # the matrix, with every class name
        assert [t.get_text() for t in ax.get_yticklabels()] == names
    else:  # the most confused pairs, one bar each
        assert len(ax.patches) == confusion.TOP_PAIRS
        assert all("→" in t.get_text() for t in ax.get_yticklabels())
