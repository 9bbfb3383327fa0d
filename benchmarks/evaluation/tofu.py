"""TOFU's aggregate metrics from per-question truth ratios and view means.

The truth ratio R of a question is computed once, in the scoring pass of
:func:`benchmarks.evaluation.evaluate.evaluate_model` (``truth_ratio_R`` in each row); here it is
aggregated the TOFU way: on forgotten questions R should be near 1 (no preference for the truth),
elsewhere near 0 (the truth preferred).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import ks_2samp

from benchmarks.evaluation.criteria import harmonic_mean

#: Views whose questions should be forgotten: TOFU's ``closer_to_1_better`` aggregation.
FORGOTTEN_VIEWS = ("forget", "forget_paraphrased")
UTILITY_METRICS = ("answer_prob", "rougeL_recall", "truth_ratio")


def truth_ratio_score(ratios: Sequence[float], forgotten: bool) -> float:
    """Mean min(R, 1/R) on forgotten questions, mean max(0, 1 − R) on kept ones; higher better."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1 / r) if forgotten else np.maximum(0.0, 1 - r)))


def forget_quality(ratios: Sequence[float], reference_ratios: Sequence[float]) -> dict[str, float]:
    """KS two-sample test of forget truth ratios against the retain-only model's: p = 1 is ideal."""
    test = ks_2samp(ratios, reference_ratios)
    return {"forget_quality": float(test.pvalue), "ks_statistic": float(test.statistic)}


def model_utility(
    view_means: Mapping[str, Mapping[str, float]], views: Sequence[str]
) -> float | None:
    """Harmonic mean of answer probability, ROUGE-L recall and truth ratio over the kept views
    (None if one was not evaluated)."""
    return harmonic_mean(view_means.get(s, {}).get(m) for s in views for m in UTILITY_METRICS)
