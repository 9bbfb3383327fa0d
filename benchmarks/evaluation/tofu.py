"""TOFU's aggregate metrics, as TOFU's ``aggregate_eval_stat.py`` computes them, from the rows
:func:`benchmarks.evaluation.evaluate.evaluate_model` writes.

Each row with perturbed answers carries its truth ratio R (``truth_ratio_R``, base answer: the
paraphrased one where the data has it), ``truth_preference`` = max(0, 1 − R) and TOFU's
normalised probability (``answer_prob_normalised``). Here they are aggregated:

- ``forget_truth_ratio``: mean min(R, 1/R) over a forgotten view's questions (TOFU's "Forget
  Truth Ratio"; 1 when the model cannot tell the truth from the wrong answers);
- ``forget_quality``: the KS-test p-value between the forget set's truth ratios and the
  retain-only model's (TOFU compares 1/R; the KS statistic is the same for R);
- ``model_utility``: on TOFU data, the harmonic mean of TOFU's 9 values (probability, ROUGE-L
  recall and truth preference on the retain set, real authors and world facts, the probability
  on the last two normalised over the options); on other data, of answer_prob, rougeL_recall and
  truth_preference over ``eval.tofu.utility_views``. ``model_utility_kind`` names which.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from benchmarks.data.split import reported
from benchmarks.evaluation.specs import harmonic_mean

#: Views whose questions should be forgotten: TOFU's ``closer_to_1_better`` aggregation.
FORGOTTEN_VIEWS = ("forget", "forget_paraphrased")
#: TOFU's model utility: each set (our view holding it) and the probability TOFU reads there.
#: The retain set is TOFU's ``retain_perturbed``, loaded as the hard retain.
TOFU_UTILITY = {
    "retain": ("hard_retain", "answer_prob"),
    "real_authors": ("real_authors", "answer_prob_normalised"),
    "world_facts": ("world_facts", "answer_prob_normalised"),
}
#: The 6-value model utility's metrics per kept view, on data without TOFU's sets.
UTILITY_METRICS = ("answer_prob", "rougeL_recall", "truth_preference")
#: Forget quality is flagged as weak when p < 0.05 needs the two truth-ratio distributions to
#: differ by more than this KS distance.
WEAK_KS_DISTANCE = 0.5

Rows = Sequence[Mapping[str, Any]]


def forget_truth_ratio(ratios: Sequence[float]) -> float:
    """TOFU's forget truth ratio: mean min(R, 1/R); 1 when truth and wrong answers are alike."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1 / r)))


def ks_power(n: int, m: int) -> dict[str, float | None]:
    """What a two-sample KS test on n and m values can show at all: the smallest p-value it can
    give (two fully separated samples) and, for n = m (the harness scores the same questions
    under both models), the smallest KS distance D with p < 0.05 (None where no D reaches it, or
    n ≠ m)."""
    with warnings.catch_warnings():  # scipy's exact p fails for large n and says it uses asymp
        warnings.simplefilter("ignore", RuntimeWarning)
        smallest_p = float(ks_2samp(np.arange(n), np.arange(n, n + m)).pvalue)
        distance = None
        if n == m and smallest_p < 0.05:
            # Samples shifted by k ranks are k/n apart in KS distance; p falls as k grows.
            distance = next(k / n for k in range(1, n + 1) if _p_shifted(n, k) < 0.05)
    return {"smallest_p": smallest_p, "distance_for_p05": distance}


def _p_shifted(n: int, k: int) -> float:
    return float(ks_2samp(np.arange(n), np.arange(n) + k).pvalue)


def forget_quality(ratios: Sequence[float], reference_ratios: Sequence[float]) -> dict[str, Any]:
    """KS two-sample test of forget truth ratios against the retain-only model's: p = 1 is ideal.

    With few questions the test can hardly tell anything apart (10 vs 10: p ≥ 0.78 whenever
    D ≤ 0.3, p < 0.05 needs D ≥ 0.7): ``forget_quality_n`` and ``forget_quality_power`` say so,
    and ``forget_quality_warning`` when p < 0.05 needs D above :data:`WEAK_KS_DISTANCE` or is out
    of reach."""
    test = ks_2samp(ratios, reference_ratios)
    n, m = len(ratios), len(reference_ratios)
    power = ks_power(n, m)
    result: dict[str, Any] = {
        "forget_quality": float(test.pvalue),
        "ks_statistic": float(test.statistic),
        "forget_quality_n": {"unlearned": n, "reference": m},
        "forget_quality_power": power,
    }
    distance = power["distance_for_p05"]
    if power["smallest_p"] >= 0.05 or (distance is not None and distance > WEAK_KS_DISTANCE):
        reach = (
            "p < 0.05 is out of reach"
            if distance is None
            else f"p < 0.05 needs a KS distance D ≥ {distance:.2f} between the two distributions"
        )
        result["forget_quality_warning"] = (
            f"forget quality compares {n} vs {m} truth ratios: the smallest p-value it can give "
            f"is {power['smallest_p']:.2g} and {reach}, so a p near 1 says little; a larger "
            "forget set (data.forget_set) gives the test power"
        )
    return result


def view_mean(rows: Rows, view: str, key: str) -> float | None:
    """Mean of ``key`` over a view's rows that have it; None if none has it."""
    values = [float(row[key]) for row in rows if row["view"] == view and row.get(key) is not None]
    return float(np.mean(values)) if values else None


def is_tofu(rows: Rows) -> bool:
    """Whether the rows hold TOFU's real-author and world-fact questions."""
    return {"real_authors", "world_facts"} <= {row["view"] for row in rows}


def model_utility(rows: Rows, utility_views: Iterable[str]) -> dict[str, Any]:
    """TOFU's model utility where the rows hold TOFU's sets, else the harmonic mean over the
    configured kept views; ``model_utility_values`` holds each value that went into it (None
    where a view was not evaluated, which makes the utility None too). A split view is read in
    its test half where that was evaluated."""
    views = {row["view"] for row in rows}
    if is_tofu(rows):
        kind = "tofu"
        values = {
            f"{name}/{metric}": view_mean(rows, reported(view, views), metric)
            for name, (view, probability) in TOFU_UTILITY.items()
            for metric in (probability, "rougeL_recall", "truth_preference")
        }
    else:
        kind = "retain_views"
        values = {
            f"{view}/{metric}": view_mean(rows, view, metric)
            for view in (reported(base, views) for base in utility_views)
            for metric in UTILITY_METRICS
        }
    return {
        "model_utility": harmonic_mean(values.values()),
        "model_utility_kind": kind,
        "model_utility_values": values,
    }


def tofu_metrics(
    rows: Rows, utility_views: Iterable[str], reference_ratios: Sequence[float] | None
) -> dict[str, Any]:
    """Every TOFU aggregate of one model's rows (the test half of a split view where that was
    evaluated); forget quality only against a reference."""
    views = {row["view"] for row in rows}
    ratios = {
        view: [
            float(r["truth_ratio_R"]) for r in rows if r["view"] == view and "truth_ratio_R" in r
        ]
        for view in (reported(base, views) for base in FORGOTTEN_VIEWS)
    }
    result: dict[str, Any] = {
        "forget_truth_ratio": {v: forget_truth_ratio(r) for v, r in ratios.items() if r},
        **model_utility(rows, utility_views),
        "forget_quality": None,
    }
    if reference_ratios and ratios["forget"]:
        result.update(forget_quality(ratios["forget"], reference_ratios))
    return result
