"""The suite's metric families on hand-made inputs whose values are known: MIA scores, AUC and
privleak, TOFU aggregates, the WPU criteria and fine-grained retention."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from benchmarks.evaluation.criteria import CRITERIA, criteria, harmonic_mean, submetrics
from benchmarks.evaluation.fine_grained import fine_grained
from benchmarks.evaluation.generation import answer_logprobs
from benchmarks.evaluation.privacy import (
    MIA_SCORES,
    TokenStats,
    answer_token_stats,
    auc,
    loss_score,
    min_k_plus_plus_score,
    min_k_score,
    privleak,
    zlib_score,
)
from benchmarks.evaluation.tofu import forget_quality, model_utility
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter, encode_pair


def stats(*logprobs: float, mean: float = 0.0, std: float = 1.0) -> TokenStats:
    lp = np.array(logprobs)
    return TokenStats(lp, np.full_like(lp, mean), np.full_like(lp, std))


# -- membership inference --------------------------------------------------------------------


def test_mia_scores_on_a_known_log_prob_vector() -> None:
    s = stats(*np.log([0.1, 0.5, 0.9, 0.2, 0.8]))
    assert loss_score(s, "x", 0.4) == pytest.approx(-np.mean(np.log([0.1, 0.5, 0.9, 0.2, 0.8])))
    # k = 40% of 5 tokens: the two lowest, 0.1 and 0.2.
    assert min_k_score(s, "x", 0.4) == pytest.approx(-(math.log(0.1) + math.log(0.2)) / 2)
    # A share below one token still takes one: the lowest.
    assert min_k_score(s, "x", 0.01) == pytest.approx(-math.log(0.1))
    assert min_k_score(s, "x", 1.0) == pytest.approx(loss_score(s, "x", 1.0))


def test_min_k_plus_plus_standardises_by_the_vocabulary_moments() -> None:
    # z = (lp - mu) / sigma = (-2, -3, -4, -5) - (-1) over 2 = (-0.5, -1, -1.5, -2); lowest half.
    s = stats(-2.0, -3.0, -4.0, -5.0, mean=-1.0, std=2.0)
    assert min_k_plus_plus_score(s, "x", 0.5) == pytest.approx((1.5 + 2.0) / 2)
    # Tokens exactly as likely as the model's average token score 0, whatever their log-prob.
    assert min_k_plus_plus_score(stats(-7.0, -7.0, mean=-7.0), "x", 0.5) == pytest.approx(0.0)


def test_zlib_divides_the_loss_by_the_compressed_length() -> None:
    s = stats(-2.0, -4.0)
    assert zlib_score(s, "Ulm", 0.4) == pytest.approx(3.0 / 11)  # zlib.compress(b"Ulm"): 11 bytes
    # The same loss on a repetitive text (small when compressed) looks less like a member.
    assert zlib_score(s, "a" * 100, 0.4) > zlib_score(s, "".join(map(chr, range(33, 133))), 0.4)


def test_every_mia_score_is_registered() -> None:
    assert MIA_SCORES.names() == ["loss", "min_k", "min_k_plus_plus", "zlib"]


def test_auc_of_separable_scores() -> None:
    assert auc([0.1, 0.2, 0.3], [0.7, 0.8]) == 1.0  # forget all more member-like
    assert auc([0.7, 0.8], [0.1, 0.2, 0.3]) == 0.0
    assert auc([0.5, 0.5], [0.5, 0.5]) == 0.5


def test_privleak_relative_to_the_reference() -> None:
    assert privleak(0.5, 0.5) == pytest.approx(0.0)
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # remembers everything: under-unlearned
    assert privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearned
    assert privleak(0.7, 1.0) is None


def test_answer_token_stats_match_the_scoring_pass_and_the_vocabulary_moments(
    make_cfg: Callable[..., DictConfig],
) -> None:
    model, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    prompts = [Prompter()(tokenizer, q) for q in ("Where was Einstein born?", "Hi?")]
    answers = ["Ulm", "Hello there, how are you?"]
    got = answer_token_stats(model, tokenizer, prompts, answers, batch_size=2)
    expected = answer_logprobs(model, tokenizer, prompts, answers, batch_size=1)
    for s, lp in zip(got, expected, strict=True):
        np.testing.assert_allclose(s.logprobs, lp, atol=1e-5)

    # The moments by hand for the first answer: E[log p] and its std over the vocabulary.
    encoded = encode_pair(tokenizer, prompts[0], answers[0])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoded["input_ids"]])).logits[0, :-1]
    logprobs = F.log_softmax(logits.float(), dim=-1)[torch.tensor(encoded["labels"][1:]) != -100]
    mean = (logprobs.exp() * logprobs).sum(-1)
    std = ((logprobs.exp() * (logprobs - mean[:, None]) ** 2).sum(-1)).sqrt()
    np.testing.assert_allclose(got[0].vocab_mean, mean.numpy(), rtol=1e-4)
    np.testing.assert_allclose(got[0].vocab_std, std.numpy(), rtol=1e-3)


# -- TOFU --------------------------------------------------------------------------------------


# TOFU's own formulas on fixed arrays: tests/test_tofu_golden.py.


def test_forget_quality_warns_when_few_questions_leave_the_ks_test_no_power() -> None:
    ten = forget_quality([0.1 * i for i in range(1, 11)], [0.1 * i + 0.05 for i in range(1, 11)])
    assert ten["forget_quality"] > 0.99 and ten["forget_quality_n"] == {
        "unlearned": 10,
        "reference": 10,
    }
    assert ten["forget_quality_power"]["distance_for_p05"] == pytest.approx(0.7)
    assert "p < 0.05 needs a KS distance D ≥ 0.70" in ten["forget_quality_warning"]
    forty = forget_quality([0.1 * i for i in range(40)], [0.1 * i + 0.05 for i in range(40)])
    assert forty["forget_quality_power"]["distance_for_p05"] == pytest.approx(0.325)
    assert "forget_quality_warning" not in forty
    three = forget_quality([0.5, 1.0, 2.0], [0.6, 1.1, 2.1])["forget_quality_warning"]
    assert "p < 0.05 is out of reach" in three


def test_model_utility_without_tofus_sets_is_the_harmonic_mean_over_kept_views() -> None:
    rows = [
        {"view": "hard_retain", "answer_prob": 0.5, "rougeL_recall": 1.0, "truth_preference": 0.5},
        {"view": "hard_retain", "answer_prob": 0.5, "rougeL_recall": 1.0, "truth_preference": 0.5},
        {"view": "general_retain", "answer_prob": 0.25, "rougeL_recall": 1.0},
        {
            "view": "general_retain",
            "answer_prob": 0.25,
            "rougeL_recall": 1.0,
            "truth_preference": 1.0,
        },
        {"view": "world_facts", "answer_prob": 0.9, "rougeL_recall": 0.0, "truth_preference": 0.0},
    ]
    utility = model_utility(rows, ["hard_retain", "general_retain"])
    assert utility["model_utility_kind"] == "retain_views"  # world facts alone do not make TOFU
    assert utility["model_utility"] == pytest.approx(6 / (2 + 1 + 2 + 4 + 1 + 1))
    assert utility["model_utility_values"]["general_retain/truth_preference"] == 1.0
    missing = model_utility(rows, ["hard_retain", "retain"])  # retain was not evaluated
    assert (
        missing["model_utility"] is None
        and missing["model_utility_values"]["retain/answer_prob"] is None
    )


# -- WPU criteria ------------------------------------------------------------------------------


def test_harmonic_mean() -> None:
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.4]) == pytest.approx(0.4)
    assert harmonic_mean([0.9, 0.0]) == 0.0
    assert harmonic_mean([0.9, None]) is None
    assert harmonic_mean([]) is None


def row(view: str, **values: Any) -> dict[str, Any]:
    return {"view": view, **values}


ROWS = [
    row("forget", rougeL_recall=1.0, judge_privacy=0.0, judge_quality=1.0, judge_reject=0.0),
    row("forget", rougeL_recall=0.0, judge_privacy=1.0, judge_quality=0.5, judge_reject=1.0),
    row("forget_paraphrased", rougeL_recall=1.0),
    row("hard_retain", rougeL_recall=0.5, judge_quality=1.0),
    row("general_retain", rougeL_recall=1.0),
    row("attack/many_shot", rougeL_recall=0.5, judge_privacy=0.5),
    row("attack/many_shot", rougeL_recall=0.5, judge_privacy=0.5),
]


def test_criteria_from_judged_rows() -> None:
    subs = submetrics(ROWS, ["many_shot"])
    assert subs["unlearning_efficacy"] == {"forget_1_minus_rougeL": 0.5, "forget_privacy": 0.5}
    assert subs["response_quality"] == {
        "forget_response_quality": 0.75,
        "hard_retain_response_quality": 1.0,
    }
    assert subs["adversarial_robustness"] == {
        "many_shot_privacy": 0.5,
        "many_shot_1_minus_rougeL": 0.5,
    }
    values = criteria(subs)
    assert tuple(values) == CRITERIA
    assert values == pytest.approx(
        {
            "unlearning_efficacy": 0.5,
            "model_utility": 2 / 3,  # H(0.5, 1.0)
            "response_quality": 2 / (1 / 0.75 + 1),
            "hallucination_avoidance": 0.5,
            "adversarial_robustness": 0.5,
        }
    )


def test_criteria_are_recomputable_from_the_recorded_submetrics_so_normalising_needs_only_them() -> (
    None
):
    better = [{**r, "judge_privacy": 1.0} if "judge_privacy" in r else r for r in ROWS]
    runs = {name: submetrics(rows, ["many_shot"]) for name, rows in (("a", ROWS), ("b", better))}
    raw = {name: criteria(subs) for name, subs in runs.items()}
    for subs, values in zip(runs.values(), raw.values(), strict=True):
        for name in CRITERIA:
            assert values[name] == pytest.approx(harmonic_mean(subs[name].values()))
            assert 0.0 <= values[name] <= 1.0
    best = raw["b"]["unlearning_efficacy"]
    assert raw["a"]["unlearning_efficacy"] / best == pytest.approx(0.5 / (2 / 3))


def test_a_criterion_with_an_unjudged_row_is_missing_not_wrong() -> None:
    partial = [dict(r) for r in ROWS]
    del partial[1]["judge_privacy"]  # the judge failed on the second forget row
    values = criteria(submetrics(partial, ["many_shot"]))
    assert values["unlearning_efficacy"] is None
    assert values["model_utility"] == pytest.approx(2 / 3)
    # Without attacks there is nothing to be robust against.
    assert criteria(submetrics(ROWS, []))["adversarial_robustness"] is None


def test_fine_grained_retention_counts_kept_facts_the_target_knew() -> None:
    target = [
        {"view": "forget_facts_retained", "id": "a", "leak_rate": 1.0},
        {"view": "forget_facts_retained", "id": "b", "leak_rate": 1.0},
        {"view": "forget_facts_retained", "id": "c", "leak_rate": 0.0},  # never known
    ]
    unlearned = [
        {"view": "forget", "id": "f", "leak_rate": 0.0, "rougeL_recall": 0.0},
        {"view": "forget_facts_retained", "id": "a", "leak_rate": 1.0, "rougeL_recall": 1.0},
        {"view": "forget_facts_retained", "id": "b", "leak_rate": 0.0, "rougeL_recall": 0.0},
        {"view": "forget_facts_retained", "id": "c", "leak_rate": 0.0, "rougeL_recall": 0.0},
    ]
    result = fine_grained(unlearned, target)
    assert result is not None
    assert result["retention"] == pytest.approx(0.5)
    assert result["forgotten"] == pytest.approx(1.0)
    assert result["score"] == pytest.approx(2 / 3)
    assert result["retained_leak_rate"] == pytest.approx(1 / 3)
    assert fine_grained([r for r in unlearned if r["view"] == "forget"], target) is None
