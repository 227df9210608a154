"""Classification and regression metrics, on the 0-100 scale of the GLUE/CLUE leaderboards.

Thin wrappers over scikit-learn and scipy so every adapter reports the same names:
accuracy, f1 (binary, positive class 1), matthews_correlation, pearson, spearmanr.
"""

from __future__ import annotations

import numpy as np


def accuracy(gold, predicted) -> float:
    from sklearn.metrics import accuracy_score

    return 100.0 * accuracy_score(gold, predicted)


def f1(gold, predicted) -> float:
    from sklearn.metrics import f1_score

    return 100.0 * f1_score(gold, predicted, pos_label=1, average="binary", zero_division=0)


def matthews_correlation(gold, predicted) -> float:
    from sklearn.metrics import matthews_corrcoef

    return 100.0 * matthews_corrcoef(gold, predicted)


def pearson(gold, predicted) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, gold, predicted)


def spearmanr(gold, predicted) -> float:
    from scipy.stats import spearmanr as spearman

    return _correlation(spearman, gold, predicted)


def _correlation(function, gold, predicted) -> float:
    gold, predicted = np.asarray(gold, float), np.asarray(predicted, float)
    if gold.std() == 0 or predicted.std() == 0:  # undefined for a constant input; reported as 0
        return 0.0
    return 100.0 * float(function(gold, predicted).statistic)


METRICS = {f.__name__: f for f in (accuracy, f1, matthews_correlation, pearson, spearmanr)}
