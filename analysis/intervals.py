"""95% bootstrap intervals over questions and seeds, and ties, for comparing methods.

The unit resampled is the question: a forget record (with all its paraphrases), a retain question.
One replicate draws each pool of questions (the forget records; each retain view's questions)
with replacement, once, and applies that draw to every seed of every method: each seed's metric
is recomputed on the drawn questions (resampling within seeds) and the replicate's value is the
mean over seeds. The interval is the 2.5th to 97.5th percentile of the replicates. It answers "how
much would this number move if the benchmark had asked other questions of the same kind?"; the
same draw across seeds keeps a question that is hard for every seed counted as one question, not
as three independent ones. Seed-to-seed spread that is not tied to questions (a training run that
goes better overall) is not in the interval; the tables show the std over seeds beside it.

Ties: the difference between two methods is bootstrapped with the same draws (paired: both are
scored on the same questions); a method whose difference to the best contains 0 is tied with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: A metric's per-question values: one row per seed, one column per question of its pool (NaN
#: where a seed has no value for that question).
Values = np.ndarray
#: A statistic: per-question means by name (each an array of the same shape) → its value.
Statistic = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def draws(pools: Mapping[str, int], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Per pool (its number of questions), ``n_boot`` multiplicity vectors: how often each
    question is drawn in each replicate (row 0 is not special: all are random draws)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(pools):
        n = pools[name]
        picks = rng.integers(0, n, size=(n_boot, n))
        out[name] = np.stack([np.bincount(row, minlength=n) for row in picks]).astype(float)
    return out


def weighted_means(values: Values, weights: np.ndarray) -> np.ndarray:
    """Per replicate and seed, the mean over the drawn questions: [n_boot, n_seeds]."""
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    totals = weights @ filled.T  # [n_boot, n_seeds]
    counts = weights @ present.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / counts


def plain_means(values: Values) -> np.ndarray:
    """Per seed, the mean over every question: [1, n_seeds]."""
    return np.nanmean(values, axis=1)[None, :]


def replicates(
    inputs: Mapping[str, tuple[str, Values]],
    statistic: Statistic,
    pool_draws: Mapping[str, np.ndarray] | None,
) -> np.ndarray:
    """The statistic per replicate (mean over seeds of its per-seed value); with no draws, the
    point estimate as a one-element array. ``inputs``: name → (its pool, its values)."""
    means = {
        name: plain_means(values)
        if pool_draws is None
        else weighted_means(values, pool_draws[pool])
        for name, (pool, values) in inputs.items()
    }
    return np.nanmean(statistic(means), axis=1)


def interval(point: float, values: np.ndarray, level: float = 0.95) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def bootstrap(
    inputs: Mapping[str, tuple[str, Values]],
    statistic: Statistic,
    pool_draws: Mapping[str, np.ndarray],
) -> tuple[Interval, np.ndarray]:
    """The statistic's point estimate and 95% interval, and its replicates (for paired ties)."""
    values = replicates(inputs, statistic, pool_draws)
    return interval(float(replicates(inputs, statistic, None)[0]), values), values


def ties(
    per_method: Mapping[str, np.ndarray],
    points: Mapping[str, float],
    higher_is_better: bool,
    level: float = 0.95,
) -> tuple[str, list[str]]:
    """The best method by its point estimate, and the methods tied with it: those whose paired
    bootstrap difference to the best (``per_method``: replicates from the same draws) has an
    interval containing 0."""
    present = {m: p for m, p in points.items() if not np.isnan(p)}
    best = (max if higher_is_better else min)(present, key=present.get)
    tied = []
    for method in present:
        if method == best:
            continue
        difference = per_method[best] - per_method[method]
        if interval(points[best] - points[method], difference, level).contains(0.0):
            tied.append(method)
    return best, tied
