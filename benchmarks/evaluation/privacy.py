"""Membership inference: does the model still treat the forget set like data it was trained on?

Each attack turns an answer's token log-probabilities into a *non-membership* score (higher: looks
unseen), as open-unlearning does. The AUC of forget (label 0) against holdout questions the target
never saw (label 1) is then about 1 while the forget set is remembered and 0.5 when it looks as
unseen as the holdout; privleak compares that AUC with the retain-only reference model's (MUSE).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.costs import counting_forwards
from benchmarks.data.records import UnlearningData
from benchmarks.prompting import Prompter, encode_pairs, pad_encoded
from benchmarks.registry import Registry


@dataclass(frozen=True)
class TokenStats:
    """Per answer token: its log-prob, and the mean and std of log p over the vocabulary there."""

    logprobs: np.ndarray
    vocab_mean: np.ndarray
    vocab_std: np.ndarray


#: ``score(stats, answer text, k) -> non-membership score``.
MiaScore = Callable[[TokenStats, str, float], float]
MIA_SCORES: Registry[MiaScore] = Registry("MIA score")


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest ``k`` share of values (at least one)."""
    count = max(1, int(len(values) * k))
    return float(np.mean(np.sort(values)[:count]))


@MIA_SCORES.register("loss")
def loss_score(stats: TokenStats, text: str, k: float) -> float:
    """Mean answer NLL (Yeom et al.)."""
    return float(-np.mean(stats.logprobs))


@MIA_SCORES.register("zlib")
def zlib_score(stats: TokenStats, text: str, k: float) -> float:
    """NLL over the zlib-compressed length: discounts answers that are easy for any model."""
    return loss_score(stats, text, k) / len(zlib.compress(text.encode("utf-8")))


@MIA_SCORES.register("min_k")
def min_k_score(stats: TokenStats, text: str, k: float) -> float:
    """Min-k% Prob: minus the mean of the lowest k% token log-probs (Shi et al.)."""
    return -_lowest_mean(stats.logprobs, k)


@MIA_SCORES.register("min_k_plus_plus")
def min_k_plus_plus_score(stats: TokenStats, text: str, k: float) -> float:
    """Min-k%++: token log-probs standardised by the vocabulary's moments, then Min-k% (Zhang et al.)."""
    standardised = (stats.logprobs - stats.vocab_mean) / stats.vocab_std
    return -_lowest_mean(standardised, k)


def auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC-AUC of telling holdout (1) from forget (0) by the score; 1: the forget set is remembered."""
    labels = [0] * len(forget_scores) + [1] * len(holdout_scores)
    return float(roc_auc_score(labels, [*forget_scores, *holdout_scores]))


def privleak(auc_model: float, auc_reference: float) -> float | None:
    """MUSE/open-unlearning PrivLeak in %: about 0 is ideal, −100 under-, positive over-unlearning."""
    if auc_reference >= 1.0:
        return None
    return ((1 - auc_model) - (1 - auc_reference)) / (1 - auc_reference) * 100


@torch.no_grad()
def answer_token_stats(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
) -> list[TokenStats]:
    """One scoring pass: every answer's token log-probs with the vocabulary moments min-k%++ needs."""
    encoded = encode_pairs(tokenizer, prompts, answers, site="privacy")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    stats: dict[int, TokenStats] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            tensors = pad_encoded([encoded[i] for i in batch], tokenizer.pad_token_id, side="right")
            tensors = {k: v.to(model.device) for k, v in tensors.items()}
            with counting_forwards(model):
                logits = model(
                    input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]
                ).logits
            logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
            labels = tensors["labels"][:, 1:]
            mask = labels != -100
            token_lp = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            probs = logprobs.exp()
            mean = (probs * logprobs).sum(-1)
            std = ((probs * logprobs.square()).sum(-1) - mean.square()).clamp(min=1e-12).sqrt()
            for row, i in enumerate(batch):
                keep = mask[row]
                stats[i] = TokenStats(
                    token_lp[row][keep].cpu().numpy(),
                    mean[row][keep].cpu().numpy(),
                    std[row][keep].cpu().numpy(),
                )
    finally:
        model.train(was_training)
    return [stats[i] for i in range(len(encoded))]


#: Per MIA score: the forget questions' scores and the holdout questions' scores.
MiaScores = dict[str, tuple[list[float], list[float]]]
#: The bootstrap behind every AUC and privleak interval: resamples, level, seed (fixed, so a
#: rerun gives the same interval).
BOOTSTRAP = {"resamples": 1000, "level": 0.95, "seed": 0}
#: Below this many forget or holdout questions an AUC says little: the results carry a warning.
MIN_MIA_QUESTIONS = 30


def mia_scores(
    forget: Sequence[tuple[TokenStats, str]], holdout: Sequence[tuple[TokenStats, str]], k: float
) -> MiaScores:
    """Every registered attack's scores of the forget and of the holdout questions."""
    return {
        name: (
            [MIA_SCORES.get(name)(s, text, k) for s, text in forget],
            [MIA_SCORES.get(name)(s, text, k) for s, text in holdout],
        )
        for name in MIA_SCORES.names()
    }


def mia_aucs(
    forget: Sequence[tuple[TokenStats, str]], holdout: Sequence[tuple[TokenStats, str]], k: float
) -> dict[str, float]:
    """The forget-vs-holdout AUC of every registered attack."""
    return {name: auc(*pair) for name, pair in mia_scores(forget, holdout, k).items()}


def rank_auc(forget: np.ndarray, holdout: np.ndarray) -> np.ndarray:
    """ROC-AUC along the last axis (holdout positive, ties count half), from ranks: many
    resamples at once, equal to :func:`auc` on each."""
    n, m = forget.shape[-1], holdout.shape[-1]
    ranks = rankdata(np.concatenate([forget, holdout], axis=-1), axis=-1)
    return (ranks[..., n:].sum(-1) - m * (m + 1) / 2) / (n * m)


def bootstrap_intervals(
    scores: tuple[Sequence[float], Sequence[float]],
    reference: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    resamples: int = BOOTSTRAP["resamples"],
    level: float = BOOTSTRAP["level"],
    seed: int = BOOTSTRAP["seed"],
) -> dict[str, dict[str, float] | None]:
    """Percentile bootstrap intervals of the AUC and, with the reference model's scores of the
    same questions, of privleak: forget and holdout questions are resampled apart (the AUC's two
    classes keep their sizes), the same questions for both models."""
    forget, holdout = (np.asarray(s, dtype=float) for s in scores)
    rng = np.random.default_rng(seed)
    pick_f = rng.integers(0, len(forget), (resamples, len(forget)))
    pick_h = rng.integers(0, len(holdout), (resamples, len(holdout)))
    aucs = rank_auc(forget[pick_f], holdout[pick_h])
    tails = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    result: dict[str, dict[str, float] | None] = {
        "auc": _bounds(np.percentile(aucs, tails)),
        "privleak": None,
    }
    if reference is not None:
        ref_f, ref_h = (np.asarray(s, dtype=float) for s in reference)
        ref_aucs = rank_auc(ref_f[pick_f], ref_h[pick_h])
        kept = ref_aucs < 1.0  # privleak is undefined where the reference AUC is 1
        if kept.any():
            leaks = (ref_aucs[kept] - aucs[kept]) / (1 - ref_aucs[kept]) * 100
            result["privleak"] = _bounds(np.percentile(leaks, tails))
    return result


def _bounds(values: np.ndarray) -> dict[str, float]:
    """An interval as ``{"low", "high"}``: flattened, both are numeric columns for analysis."""
    return {"low": float(values[0]), "high": float(values[1])}


def mia_results(scores: MiaScores, reference: MiaScores | None) -> dict[str, Any]:
    """The privacy family's numbers: each score's AUC with its bootstrap interval, privleak (and
    its interval) against the reference's scores where there are some, the question counts, and
    a warning when they are few."""
    n = {
        "forget": len(next(iter(scores.values()))[0]),
        "holdout": len(next(iter(scores.values()))[1]),
    }
    aucs = {name: auc(*pair) for name, pair in scores.items()}
    intervals = {
        name: bootstrap_intervals(pair, reference.get(name) if reference else None)
        for name, pair in scores.items()
    }
    result: dict[str, Any] = {
        "auc": aucs,
        "auc_ci": {name: ci["auc"] for name, ci in intervals.items()},
        "n": n,
        "bootstrap": dict(BOOTSTRAP),
    }
    if reference:
        result["privleak"] = {name: privleak(aucs[name], auc(*reference[name])) for name in aucs}
        result["privleak_ci"] = {name: ci["privleak"] for name, ci in intervals.items()}
    if min(n.values()) < MIN_MIA_QUESTIONS:
        widest = max(ci["high"] - ci["low"] for ci in result["auc_ci"].values())
        result["warning"] = (
            f"MIA AUCs compare {n['forget']} forget vs {n['holdout']} holdout questions: their "
            f"{BOOTSTRAP['level']:.0%} bootstrap intervals are up to {widest:.2f} wide, so an AUC "
            "near 0.5 or a privleak near 0 says little; more questions (data.forget_set, a "
            "larger holdout) narrow them"
        )
    return result


def forget_vs_holdout_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: UnlearningData,
    prompter: Prompter,
    *,
    k: float,
    batch_size: int,
) -> MiaScores:
    """Each MIA score of the forget and of the holdout questions, from one scoring pass."""
    forget, holdout = data.forget, data.with_role("holdout")
    records = [*forget, *holdout]
    stats = answer_token_stats(
        model,
        tokenizer,
        [prompter(tokenizer, r.question) for r in records],
        [r.answer for r in records],
        batch_size=batch_size,
    )
    scored = list(zip(stats, (r.answer for r in records), strict=True))
    return mia_scores(scored[: len(forget)], scored[len(forget) :], k)
