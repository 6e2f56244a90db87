"""Metrics against values worked out by hand."""
import numpy as np
import pytest

from minibert.training.metrics import classification_metrics, confusion, format_confusion, majority_baseline


def test_weighted_and_macro_f1_by_hand():
    # class 0: precision 2/2, recall 2/3 -> F1 0.8 (support 3); class 1: precision 1/2, recall 1/1 -> F1 2/3 (support 1)
    m = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1])
    assert m["weighted_f1"] == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["accuracy"] == pytest.approx(0.75)


def test_never_predicted_class_scores_zero_without_warnings(recwarn):
    m = classification_metrics([0, 1, 2, 2], [2, 2, 2, 2])
    # only class 2 is predicted: precision 2/4, recall 1 -> F1 2/3, weight 2/4
    assert m["weighted_f1"] == pytest.approx(0.5 * 2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3) / 3)
    assert not [w for w in recwarn if "ill-defined" in str(w.message)]


def test_majority_baseline_uses_the_training_majority():
    # training majority is 1; on the test set always-1 has precision 3/4, recall 1 -> F1 6/7 on 3 of 4 examples
    b = majority_baseline([1, 1, 0], [0, 1, 1, 1])
    assert b["class"] == 1
    assert b["weighted_f1"] == pytest.approx(0.75 * 6 / 7)
    assert b["accuracy"] == pytest.approx(0.75)
    assert majority_baseline([0, 1], [1, 1])["class"] == 0  # ties go to the lowest id
    # the test set's own majority (0 here) is not what counts: always-1 has precision 1/4, recall 1 -> F1 0.4
    assert majority_baseline([1, 1, 1], [0, 0, 0, 1])["weighted_f1"] == pytest.approx(0.25 * 0.4)


def test_confusion_rows_are_true_labels_and_table_shows_every_name():
    cm = confusion([0, 0, 1, 2], [0, 1, 1, 1], num_labels=4)
    assert cm.shape == (4, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    table = format_confusion(cm, ["negative", "positive", "neutral", "unused"]).splitlines()
    assert len(table) == 2 + 4
    for name in ("negative", "positive", "neutral", "unused"):
        assert name in table[0]
    assert table[2].split("|")[1].split() == ["1", "1", "0", "0"]
    assert int(np.asarray(cm).sum()) == 4
