"""Per-question metric functions; each takes plain values so tests can hand-make inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rougeL_recall(reference: str, prediction: str) -> float:
    """ROUGE-L recall of the gold answer in the generation (TOFU/WPU, stemmer on)."""
    return _ROUGE.score(reference, prediction)["rougeL"].recall


def answer_prob(token_logprobs: np.ndarray) -> float:
    """Length-normalised answer probability: exp(mean token log-prob) = P(a|q)^(1/|a|)."""
    return float(np.exp(np.mean(token_logprobs))) if len(token_logprobs) else 0.0


def truth_ratio(base_logprobs: np.ndarray, perturbed_logprobs: Sequence[np.ndarray]) -> float:
    """TOFU's truth ratio R = (∏ᵢ P(ãᵢ|q)^(1/|ãᵢ|))^(1/n) / P(â|q)^(1/|â|): the geometric mean
    of the n perturbed answers' length-normalised probabilities over the base answer's.

    The base answer â is the paraphrased answer where the dataset has one (TOFU's forget and
    retain sets: the model is not judged on the wording it was taught), else the answer itself
    (TOFU's real authors and world facts, every other dataset). In TOFU's code the same number is
    ``1 / exp(mean perturbed loss − paraphrased loss)`` with per-token mean losses.
    R < 1: the model prefers the truth; R ≈ 1: it cannot tell truth from the wrong answers.
    """
    base_mean = float(np.mean(base_logprobs))
    perturbed_mean = float(np.mean([np.mean(p) for p in perturbed_logprobs]))
    return float(np.exp(perturbed_mean - base_mean))


def multiple_choice(
    true_logprobs: np.ndarray, perturbed_logprobs: Sequence[np.ndarray]
) -> tuple[bool, float]:
    """Whether the true answer is the most likely option, and its share of the options'
    probability; probabilities are length-normalised (as in ``answer_prob``) so that a long
    option is not penalised for its length."""
    means = np.array([np.mean(lp) for lp in (true_logprobs, *perturbed_logprobs)])
    weights = np.exp(means - means.max())
    return bool(means[0] > means[1:].max()), float(weights[0] / weights.sum())


def truth_preference(ratio: float) -> float:
    """TOFU's ``max(0, 1 - R)`` (its truth-ratio score on kept sets): 1 when the model is sure
    of the truth, 0 when it prefers no answer or a wrong one."""
    return max(0.0, 1.0 - ratio)
