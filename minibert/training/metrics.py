"""Evaluation metrics: the paper's weighted F1, macro F1, accuracy, the majority-class baseline.

All scores are fractions in [0, 1] (the paper prints percentages; so do the summaries). Weighted F1 is
scikit-learn's `average="weighted"`: per-class F1 weighted by the class's support in the true labels,
which is what the paper reports. A class the model never predicts scores F1 0 (zero_division=0)
instead of raising a warning for every diverged run.
"""
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(labels, preds) -> dict:
    """weighted_f1, macro_f1 and accuracy of predicted label ids against the true ones."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    return {
        "weighted_f1": float(f1_score(labels, preds, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(labels, preds)),
    }


def majority_baseline(train_labels, test_labels) -> dict:
    """Scores of always predicting the most frequent training class (ties: the lowest id) on the test set.

    A run whose best weighted F1 is at or below this `weighted_f1` learned nothing: the paper's outliers
    (16.98% on Emotion) are runs like that.
    """
    majority = int(np.bincount(np.asarray(train_labels)).argmax())
    test_labels = np.asarray(test_labels)
    return {"class": majority, **classification_metrics(test_labels, np.full_like(test_labels, majority))}


def confusion(labels, preds, num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) counts: row = true label, column = predicted label."""
    return confusion_matrix(labels, preds, labels=list(range(num_labels)))


def format_confusion(matrix: np.ndarray, label_names) -> str:
    """The confusion matrix as an aligned text table (rows true, columns predicted)."""
    names = [str(n)[:14] for n in label_names]
    width = max([len(n) for n in names] + [len(str(int(matrix.max(initial=0)))), 4])
    head = " " * width + " | " + " ".join(n.rjust(width) for n in names) + "   <- predicted"
    rows = [n.rjust(width) + " | " + " ".join(str(int(c)).rjust(width) for c in row)
            for n, row in zip(names, matrix)]
    return "\n".join([head, "-" * len(head), *rows])
