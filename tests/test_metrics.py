"""The per-question metrics on hand-made inputs whose values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.evaluation.metrics import answer_prob, rougeL_recall, truth_preference, truth_ratio


def lp(*probs: float) -> np.ndarray:
    """Token log-probabilities from token probabilities."""
    return np.log(np.array(probs))


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("Ulm Germany", "Ulm Germany", 1.0),
        ("Ulm Germany", "Paris France", 0.0),
        # One of the reference's two words appears: recall 1/2, whatever else is generated.
        ("Ulm Germany", "born in Ulm", 0.5),
        # The stemmer makes inflections count.
        ("physicists", "a physicist", 1.0),
        ("Paris", "", 0.0),
    ],
)
def test_rougeL_recall(reference: str, prediction: str, expected: float) -> None:
    assert rougeL_recall(reference, prediction) == pytest.approx(expected)


def test_answer_prob_is_the_geometric_mean_token_probability() -> None:
    assert answer_prob(lp(0.5, 0.5)) == pytest.approx(0.5)
    assert answer_prob(lp(0.25, 1.0)) == pytest.approx(0.5)
    assert answer_prob(lp(0.9)) == pytest.approx(0.9)


def test_answer_prob_of_no_tokens_is_zero() -> None:
    assert answer_prob(np.empty(0)) == 0.0


def test_truth_ratio_of_indistinguishable_answers_is_one() -> None:
    ratio = truth_ratio(lp(0.3, 0.3), [lp(0.3), lp(0.3, 0.3, 0.3)])
    assert ratio == pytest.approx(1.0)
    assert truth_preference(ratio) == pytest.approx(0.0)


def test_truth_ratio_when_the_truth_is_much_likelier() -> None:
    # Normalised probabilities: truth 0.5; perturbed 0.1 and 0.4, geometric mean 0.2 → R = 0.4.
    ratio = truth_ratio(lp(0.5, 0.5), [lp(0.1, 0.1), lp(0.4)])
    assert ratio == pytest.approx(0.4)
    assert truth_preference(ratio) == pytest.approx(0.6)

    sure = truth_ratio(lp(0.9), [lp(1e-4), lp(1e-5)])
    assert sure == pytest.approx(math.sqrt(1e-4 * 1e-5) / 0.9)
    assert truth_preference(sure) == pytest.approx(1.0, abs=1e-3)


def test_truth_preference_clips_at_zero_when_wrong_answers_are_preferred() -> None:
    ratio = truth_ratio(lp(0.1), [lp(0.5)])
    assert ratio == pytest.approx(5.0)
    assert truth_preference(ratio) == 0.0
    assert truth_preference(1.0) == 0.0
    assert truth_preference(0.0) == 1.0
