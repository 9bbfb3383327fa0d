"""TOFU's metrics against TOFU's own aggregation (``aggregate_eval_stat.py``), on fixed arrays.

The inputs are what TOFU's evaluation stores per question: the token losses (NLL) of the answer,
of the paraphrased answer and of each perturbed answer, and the ROUGE-L recall of the
generation. The expected values are computed here, by hand, with TOFU's formulas
(reference/unstar_and_wpu_protocol.md §4.1): per-token mean losses, ``stat = exp(mean perturbed
loss − paraphrased loss)`` (= 1/R), forget truth ratio mean(min(stat, 1/stat)), kept sets
mean(max(0, 1 − 1/stat)), probability mean(exp(−loss)) on the retain set and
mean(P/(P + ΣP_perturbed)) on real authors and world facts, model utility the harmonic mean of the
9 values, forget quality the exact two-sided KS p-value (counted over every split of the pooled
sample). Our code gets the same inputs as token log-probs and rows, as the evaluation writes them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.evaluation.evaluate import score_row
from benchmarks.evaluation.tofu import tofu_metrics

#: Token NLLs per question: (answer, paraphrased answer or None, [perturbed answers]), ROUGE-L.
Question = tuple[list[float], list[float] | None, list[list[float]], float]

FORGET: list[Question] = [
    ([0.2, 0.4], [0.9, 1.1, 1.0], [[1.5, 1.7], [1.2], [2.0, 1.8, 1.6]], 0.8),
    ([0.1], [0.7, 0.5], [[0.9, 1.3], [1.0, 1.2], [0.6]], 1.0),
    ([0.3, 0.3, 0.6], [1.4], [[1.1], [1.6, 1.0], [1.3, 1.3]], 0.5),
    ([0.05, 0.15], [2.0, 1.6], [[0.4, 0.8], [0.9], [1.0, 0.2]], 0.9),
    ([0.5], [0.8, 0.6], [[3.0], [2.5, 2.7], [2.9]], 0.6),
]
#: The retain-only model on the same forget questions (answer losses do not enter forget quality).
REFERENCE: list[Question] = [
    ([2.0], [2.1], [[2.2], [2.0, 2.4], [1.9]], 0.0),
    ([1.7], [1.5, 1.9], [[1.6], [1.8], [1.4, 1.6]], 0.0),
    ([2.3], [2.6], [[2.0], [2.1, 2.1], [2.2]], 0.0),
    ([1.2], [1.0], [[1.1, 1.3], [1.2], [1.0]], 0.0),
    ([2.5], [2.2, 2.4], [[2.6], [2.3], [2.5, 2.7]], 0.0),
]
RETAIN: list[Question] = [
    ([0.3, 0.5], [0.6], [[1.9], [2.2, 2.0], [1.7]], 0.9),
    ([0.2], [0.4, 0.8], [[0.5], [0.7, 0.9], [0.6]], 0.7),
    ([0.9, 1.1], [1.0], [[0.8], [1.2], [1.1, 0.9]], 0.4),
    ([0.1, 0.1], [0.3, 0.2], [[2.5], [3.0, 2.8], [2.6]], 1.0),
]
#: Real authors and world facts have no paraphrased answer: TOFU's base there is the answer.
REAL_AUTHORS: list[Question] = [
    ([0.4, 0.2], None, [[1.2], [1.5, 1.1], [0.9]], 1.0),
    ([1.3], None, [[0.8], [1.0], [1.6, 1.2]], 0.0),
    ([0.6, 0.7, 0.5], None, [[0.6], [2.0], [1.8, 2.2]], 0.5),
    ([0.05], None, [[3.1], [2.9], [3.3, 3.5]], 1.0),
]
WORLD_FACTS: list[Question] = [
    ([0.3], None, [[0.9], [1.4, 1.0], [2.2]], 1.0),
    ([0.8, 0.6], None, [[0.7], [0.5], [0.9, 1.1]], 0.3333),
    ([0.2, 0.2], None, [[2.6], [2.4], [2.8]], 1.0),
    ([1.0], None, [[1.1, 0.9], [1.3], [0.7]], 0.5),
]


# -- TOFU's formulas, by hand ------------------------------------------------------------------


def losses(questions: list[Question]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TOFU's stored values: avg_gt_loss, avg_paraphrased_loss (the answer's where there is no
    paraphrase, as TOFU's real-author and world-fact configs), average_perturb_loss, rougeL."""
    gt = np.array([np.mean(a) for a, _, _, _ in questions])
    para = np.array([np.mean(p if p is not None else a) for a, p, _, _ in questions])
    perturbed = np.array([[np.mean(w) for w in ws] for _, _, ws, _ in questions])
    rouge = np.array([r for *_, r in questions])
    return gt, para, perturbed, rouge


def tofu_stat(questions: list[Question]) -> np.ndarray:
    _, para, perturbed, _ = losses(questions)
    return np.exp(perturbed.mean(axis=-1) - para)


def tofu_values(questions: list[Question], normalised: bool) -> dict[str, float]:
    gt, _, perturbed, rouge = losses(questions)
    if normalised:
        true, false = np.exp(-gt), np.exp(-perturbed)
        prob = np.mean(true / (true + false.sum(axis=-1)))
    else:
        prob = np.mean(np.exp(-gt))
    stat = tofu_stat(questions)
    # TOFU's column names: its "Truth Ratio" on a kept set is our truth_preference.
    return {
        "Prob.": float(prob),
        "ROUGE": float(rouge.mean()),
        "Truth Ratio": float(np.mean(np.maximum(0, 1 - 1 / stat))),
    }


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    points = np.concatenate([x, y])
    cdf_x = (x[None, :] <= points[:, None]).mean(axis=1)
    cdf_y = (y[None, :] <= points[:, None]).mean(axis=1)
    return float(np.max(np.abs(cdf_x - cdf_y)))


def exact_ks_p(x: np.ndarray, y: np.ndarray) -> float:
    """The share of all ways to split the pooled sample into groups of len(x) and len(y) whose KS
    statistic is at least the observed one (no ties): the exact two-sided p-value."""
    observed = ks_statistic(x, y)
    pooled = np.concatenate([x, y])
    splits = list(itertools.combinations(range(len(pooled)), len(x)))
    extreme = 0
    for chosen in splits:
        mask = np.zeros(len(pooled), dtype=bool)
        mask[list(chosen)] = True
        extreme += ks_statistic(pooled[mask], pooled[~mask]) >= observed - 1e-12
    return extreme / len(splits)


# -- our code on the same inputs ---------------------------------------------------------------


def rows(view: str, questions: list[Question]) -> list[dict]:
    """The rows the evaluation writes for these questions (token log-probs = −NLL)."""
    out = []
    for answer, paraphrased, perturbed, rouge in questions:
        scored = {
            "answer": [-np.array(answer)],
            "perturbed": [-np.array(w) for w in perturbed],
        }
        if paraphrased is not None:
            scored["paraphrased"] = [-np.array(paraphrased)]
        out.append({"view": view, "rougeL_recall": rouge, **score_row(scored)})
    return out


def ours() -> dict:
    unlearned = [
        *rows("forget", FORGET),
        *rows("hard_retain", RETAIN),  # TOFU's retain_perturbed is our hard retain
        *rows("real_authors", REAL_AUTHORS),
        *rows("world_facts", WORLD_FACTS),
    ]
    reference = [r["truth_ratio_R"] for r in rows("forget", REFERENCE)]
    return tofu_metrics(unlearned, ["hard_retain", "general_retain"], reference)


def test_forget_truth_ratio_is_tofus() -> None:
    stat = tofu_stat(FORGET)
    expected = float(np.mean(np.minimum(stat, 1 / stat)))
    assert ours()["forget_truth_ratio"]["forget"] == pytest.approx(expected, rel=1e-12)


def test_forget_quality_is_tofus_ks_p_value() -> None:
    unlearned, reference = tofu_stat(FORGET), tofu_stat(REFERENCE)
    result = ours()
    assert result["ks_statistic"] == pytest.approx(ks_statistic(unlearned, reference))
    assert result["forget_quality"] == pytest.approx(exact_ks_p(unlearned, reference), rel=1e-9)
    assert 0.0 < result["forget_quality"] < 1.0  # neither extreme: the arrays discriminate


def test_model_utility_is_tofus_harmonic_mean_of_nine() -> None:
    retain = tofu_values(RETAIN, normalised=False)
    real = tofu_values(REAL_AUTHORS, normalised=True)
    world = tofu_values(WORLD_FACTS, normalised=True)
    nine = [*retain.values(), *real.values(), *world.values()]
    expected = len(nine) / sum(1 / v for v in nine)

    result = ours()
    assert result["model_utility_kind"] == "tofu"
    values = result["model_utility_values"]
    names = {"Prob.": 0, "ROUGE": 1, "Truth Ratio": 2}
    for prefix, probability, by_hand in (
        ("retain", "answer_prob", retain),
        ("real_authors", "answer_prob_normalised", real),
        ("world_facts", "answer_prob_normalised", world),
    ):
        keys = [f"{prefix}/{probability}", f"{prefix}/rougeL_recall", f"{prefix}/truth_preference"]
        for name, index in names.items():
            assert values[keys[index]] == pytest.approx(by_hand[name], rel=1e-12), keys[index]
    assert result["model_utility"] == pytest.approx(expected, rel=1e-12)


def test_the_power_note_gives_the_smallest_p_and_the_distance_p_below_005_needs() -> None:
    result = ours()
    x = np.arange(5.0)
    # p of samples shifted by k of 5 ranks (KS distance k/5), by enumeration.
    p_by_distance = {k / 5: exact_ks_p(x, x + k - 0.5) for k in range(1, 6)}
    assert result["forget_quality_n"] == {"unlearned": 5, "reference": 5}
    power = result["forget_quality_power"]
    assert power["smallest_p"] == pytest.approx(p_by_distance[1.0]) == pytest.approx(2 / 252)
    assert power["distance_for_p05"] == min(d for d, p in p_by_distance.items() if p < 0.05)
    assert "5 vs 5 truth ratios" in result["forget_quality_warning"]
