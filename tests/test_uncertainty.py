"""Uncertainty of the split-level metrics: the MIA AUC's and privleak's bootstrap intervals and the
warning when the questions are few."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from benchmarks.evaluation.privacy import (
    MIN_MIA_QUESTIONS,
    auc,
    bootstrap_intervals,
    mia_results,
    privleak,
    rank_auc,
)


def test_the_rank_auc_equals_the_roc_auc_ties_included() -> None:
    rng = np.random.default_rng(1)
    forget, holdout = rng.integers(0, 5, 13).astype(float), rng.integers(1, 6, 9).astype(float)
    assert rank_auc(forget, holdout) == pytest.approx(auc(forget, holdout))
    both = rank_auc(np.stack([forget, forget]), np.stack([holdout, holdout + 10]))
    assert both == pytest.approx([auc(forget, holdout), 1.0])


def test_the_auc_interval_covers_the_true_auc_at_about_the_nominal_rate() -> None:
    """Forget scores N(0, 1), holdout N(d, 1): the true AUC is Φ(d / √2). Over 300 samples of 40
    vs 40 questions the 95% interval should hold it about 95% of the time."""
    shift, n, trials = 0.8, 40, 300
    true_auc = norm.cdf(shift / np.sqrt(2))
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(trials):
        forget, holdout = rng.normal(0, 1, n), rng.normal(shift, 1, n)
        ci = bootstrap_intervals((forget, holdout), seed=trial)["auc"]
        covered += ci["low"] <= true_auc <= ci["high"]
    assert 0.90 <= covered / trials <= 0.99


def test_the_privleak_interval_resamples_the_same_questions_for_both_models() -> None:
    rng = np.random.default_rng(3)
    forget, holdout = rng.normal(0, 1, 50), rng.normal(1, 1, 50)
    reference = (forget + rng.normal(0, 0.1, 50) + 0.9, holdout)  # the reference: near 0.5
    ci = bootstrap_intervals((forget, holdout), reference)
    point = privleak(auc(forget, holdout), auc(*reference))
    assert ci["privleak"]["low"] < point < ci["privleak"]["high"]
    # The same model as its own reference: every resample's privleak is exactly 0.
    same = bootstrap_intervals((forget, holdout), (forget, holdout))["privleak"]
    assert same == {"low": 0.0, "high": 0.0}
    # A fixed seed fixes the interval.
    assert bootstrap_intervals((forget, holdout), reference) == ci


def test_mia_results_carry_n_intervals_and_a_warning_only_when_the_questions_are_few() -> None:
    rng = np.random.default_rng(4)

    def scores(n: int) -> dict[str, tuple[list[float], list[float]]]:
        return {"loss": (list(rng.normal(0, 1, n)), list(rng.normal(1, 1, n)))}

    few = mia_results(scores(8), scores(8))
    assert few["n"] == {"forget": 8, "holdout": 8}
    ci = few["auc_ci"]["loss"]
    assert ci["low"] <= few["auc"]["loss"] <= ci["high"]
    assert few["privleak_ci"]["loss"] is not None
    assert "8 forget vs 8 holdout" in few["warning"]
    many = mia_results(scores(MIN_MIA_QUESTIONS), None)
    assert "warning" not in many and "privleak" not in many
    assert many["auc_ci"]["loss"]["high"] - many["auc_ci"]["loss"]["low"] < ci["high"] - ci["low"]
