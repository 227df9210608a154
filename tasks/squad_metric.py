"""SQuAD v1.1 exact match and F1, following the official evaluation script's rules.

`evaluate.load("squad")` fetches that script from the Hub, which these machines cannot
reach, so the rules are implemented here and pinned by tests on hand-computed cases.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """EM and F1 in percent over every question in `golds`: the best score over its gold
    answers; a question with no prediction scores 0 (as in the official script). `*_se` is
    the standard error of each mean over questions (sample std / sqrt(n)), in points."""
    if not golds:
        return {"exact_match": 0.0, "f1": 0.0, "questions": 0, "missing_predictions": 0}
    em_scores, f1_scores = [], []
    for qid, answers in golds.items():
        pred = predictions.get(qid)
        em_scores.append(0.0 if pred is None else max(exact_match(pred, a) for a in answers))
        f1_scores.append(0.0 if pred is None else max(f1(pred, a) for a in answers))
    n = len(golds)
    return {"exact_match": 100 * sum(em_scores) / n, "f1": 100 * sum(f1_scores) / n,
            "exact_match_se": 100 * _standard_error(em_scores), "f1_se": 100 * _standard_error(f1_scores),
            "questions": n, "missing_predictions": sum(qid not in predictions for qid in golds)}


def _standard_error(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5
