"""Official SQuAD v1.1 EM/F1 rules on hand-computed cases."""

import pytest

from tasks.squad_metric import exact_match, f1, normalize_answer, squad_scores


def test_normalization_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # 'the' only as a whole word


def test_exact_match_ignores_articles_and_punctuation():
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_f1_hand_computed():
    # pred tokens: [denver, broncos, team]; gold: [denver, broncos] -> P=2/3, R=1, F1=0.8
    assert f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count by multiplicity: pred [a1 a1 x], gold [a1 y]: overlap 1, P=1/3, R=1/2 -> 0.4
    assert f1("a1 a1 x", "a1 y") == pytest.approx(0.4)
    assert f1("", "Denver") == 0.0
    assert f1("the", "a") == 0.0  # both normalise to empty: no overlap


def test_scores_take_best_gold_and_count_missing_as_zero():
    golds = {
        "q1": ["Denver Broncos", "The Broncos"],
        "q2": ["Santa Clara, California"],
        "q3": ["Levi's Stadium"],  # no prediction -> 0
    }
    preds = {"q1": "Broncos", "q2": "Santa Clara"}
    scores = squad_scores(preds, golds)
    # q1: EM vs "The Broncos" = 1 (article dropped), F1 = 1.0
    # q2: EM 0; F1: pred [santa, clara], gold [santa, clara, california] -> P=1, R=2/3, F1=0.8
    # q3: missing -> 0, 0
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * (1.0 + 0.8 + 0.0) / 3)
    assert scores["questions"] == 3
    # standard errors: per-question EM (1, 0, 0) -> sample var 1/3; F1 (1, .8, 0) -> mean .6, var (.16+.04+.36)/2 = .28
    assert scores["exact_match_se"] == pytest.approx(100 * (1 / 3 / 3) ** 0.5)
    assert scores["f1_se"] == pytest.approx(100 * (0.28 / 3) ** 0.5)
    assert scores["missing_predictions"] == 1
