"""The comparison table of a sweep (``experiment=compare``): per method, the mean and a 95% bootstrap
interval of each headline metric (:mod:`analysis.intervals`: questions resampled, the same draw
for every seed and method; fluency beside forget efficacy, so that forgetting by gibberish shows),
which methods tie with the best, the tuned parameters and the tuning
budget, the stopping rule's steps, the costs, and a Pareto plot of forget efficacy against retain
utility with interval whiskers.

Every number is computed from the per-question rows of each job's ``results.json``, on the
reported views: ``<view>_test`` where it was evaluated (benchmarks/data/split.py; the default
evaluation has it for every split view), else ``<view>`` whole. Selection never reads a test half.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tabulate import tabulate

from analysis.intervals import bootstrap, draws, ties
from benchmarks.data.split import reported
from benchmarks.evaluation.selection import fluency

#: Question pools: the forget-side views share the forget records; every other view is its own.
FORGET_SIDE = ("forget", "forget_paraphrased")
RETAIN_SIDE = ("hard_retain", "general_retain")
#: Read where the data has it, as the objective does (benchmarks/evaluation/selection.py).
OPTIONAL_RETAIN_SIDE = ("answer_sharing_retain",)
#: The unlearning phase's costs shown per method (benchmarks/costs.py).
COST_COLUMNS = ("optimizer_steps", "train_tokens", "generated_tokens", "forward_passes")


@dataclass(frozen=True)
class Headline:
    """A headline metric: the per-question means it reads (name → model, base view, metric), how
    it combines them, and which way is better."""

    name: str
    reads: dict[str, tuple[str, str, str]]
    statistic: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    higher_is_better: bool
    #: Names of ``reads`` that may be missing (a view only some data has).
    optional: frozenset[str] = frozenset()


#: Per-row metrics computed here from the row's answer (``generation``) rather than read from it.
DERIVED: dict[str, Callable[[str], float]] = {"fluency": fluency}


def _single(model: str, view: str, metric: str, higher: bool, name: str) -> Headline:
    return Headline(name, {"x": (model, view, metric)}, lambda m: m["x"], higher)


def _efficacy(means: Mapping[str, np.ndarray]) -> np.ndarray:
    """1 − mean leak rate over the forget questions and their paraphrases (the objective's E)."""
    return 1 - sum(means[f"leak:{v}"] for v in FORGET_SIDE) / len(FORGET_SIDE)


def _utility(means: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean over hard and general retain, and answer-sharing retain where the data has it, of
    min(1, ROUGE-L / the target's) (the objective's U)."""
    ratios = []
    for view in (*RETAIN_SIDE, *OPTIONAL_RETAIN_SIDE):
        if f"unlearned:{view}" not in means:
            continue
        target, unlearned = means[f"target:{view}"], means[f"unlearned:{view}"]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(np.where(target > 0, np.minimum(1.0, unlearned / target), 1.0))
    return sum(ratios) / len(ratios)


HEADLINES = (
    Headline(
        "forget efficacy",
        {f"leak:{v}": ("unlearned", v, "leak_rate") for v in FORGET_SIDE},
        _efficacy,
        True,
    ),
    Headline(
        "retain utility",
        {
            f"{model}:{v}": (model, v, "rougeL_recall")
            for v in (*RETAIN_SIDE, *OPTIONAL_RETAIN_SIDE)
            for model in ("target", "unlearned")
        },
        _utility,
        True,
        optional=frozenset(
            f"{model}:{v}" for v in OPTIONAL_RETAIN_SIDE for model in ("target", "unlearned")
        ),
    ),
    Headline(
        "fluency",
        {f"fluency:{v}": ("unlearned", v, "fluency") for v in FORGET_SIDE},
        lambda m: sum(m[f"fluency:{v}"] for v in FORGET_SIDE) / len(FORGET_SIDE),
        True,
    ),
    _single("unlearned", "forget", "leak_rate", False, "forget leak"),
    _single("unlearned", "forget_paraphrased", "leak_rate", False, "paraphrased leak"),
    _single("unlearned", "forget", "rougeL_recall", False, "forget rougeL"),
    _single("unlearned", "hard_retain", "rougeL_recall", True, "hard-retain rougeL"),
    _single("unlearned", "answer_sharing_retain", "rougeL_recall", True, "answer-sharing rougeL"),
    _single("unlearned", "general_retain", "rougeL_recall", True, "general-retain rougeL"),
)


def pool(base: str) -> str:
    return "forget" if base in FORGET_SIDE else base


@dataclass
class Comparison:
    """The comparison's tables: ``table`` (per method: mean, low, high, best/tied per headline),
    ``setup`` (tuning, budget, stopping, costs per method)."""

    table: pd.DataFrame
    setup: pd.DataFrame
    n_boot: int
    #: The views the headlines read (test halves where evaluated), named under the table.
    views: tuple[str, ...] = ()

    def markdown(self) -> str:
        return (
            _markdown(self.table, self.n_boot, self.views)
            + "\n\n"
            + tabulate(self.setup, headers="keys", tablefmt="github", floatfmt=".4g")
        )


def compare(jobs: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> Comparison | None:
    """The comparison of a collection's finished jobs (None if none has per-question rows)."""
    ok = jobs[(jobs["status"] == "ok") & (jobs["path"].astype(str) != "")]
    records = {}
    for row in ok.itertuples():
        path = Path(row.path) / "results.json"
        if path.exists():
            records[row.job] = (row.label, row.seed, json.loads(path.read_text("utf-8")))
    records = {k: v for k, v in records.items() if v[2].get("generations")}
    if not records:
        return None
    records = _tuning_labels(records)
    views = {g["view"] for _, _, r in records.values() for g in r["generations"]}
    values = _question_values(records, views)
    asked: dict[str, set[str]] = defaultdict(set)
    for per_label in values.values():
        for (spec, _), ids in per_label.items():
            asked[pool(spec[1])].update(ids)
    universes = {p: sorted(ids) for p, ids in asked.items()}
    pool_draws = draws({p: len(ids) for p, ids in universes.items() if ids}, n_boot, seed)
    labels = list(dict.fromkeys(label for label, _, _ in records.values()))
    columns: dict[str, dict[str, Any]] = defaultdict(dict)
    for headline in HEADLINES:
        per_label, points = {}, {}
        for label in labels:
            inputs = _inputs(headline, values[label], universes)
            if inputs is None:
                continue
            found, per_label[label] = bootstrap(inputs, headline.statistic, pool_draws)
            points[label] = found.mean
            columns[label].update(
                {f"{headline.name} mean": found.mean, f"{headline.name} low": found.low,
                 f"{headline.name} high": found.high}
            )  # fmt: skip
        if points:
            best, tied = ties(per_label, points, headline.higher_is_better)
            for label in points:
                mark = "best" if label == best else ("tied" if label in tied else "")
                columns[label][f"{headline.name} rank"] = mark
    table = pd.DataFrame.from_dict(columns, orient="index").reindex(labels)
    read = sorted(
        {reported(b, views) for h in HEADLINES for _, b, _ in h.reads.values()} & views
    )  # the views the data has
    return Comparison(table, _setup(records, labels), n_boot, tuple(read))


def _tuning_labels(
    records: Mapping[str, tuple[str, Any, dict]],
) -> dict[str, tuple[str, Any, dict]]:
    """``npo (tuned)`` / ``npo (untuned)`` for jobs whose variant is only their tuning (a sweep of
    ``use_tuned=true,false``: the tuned parameters differ from the defaults); other labels stay.
    Of two jobs that end up with the same label and seed (a method without a tuned file, run with
    ``use_tuned=true`` and ``false``: the same job twice), the first counts."""
    tuned_keys: dict[str, set[str]] = defaultdict(lambda: {"use_tuned"})
    for _, _, results in records.values():
        params = (results.get("tuning") or {}).get("params") or {}
        tuned_keys[results.get("method")].update(params)
    out, seen = {}, set()
    for job, (label, seed, results) in records.items():
        method, tuning = results.get("method"), results.get("tuning")
        variant = label.removeprefix(str(method)).strip(" ()")
        keys = set(re.findall(r"(?:^|,)([\w.]+)=", variant))
        if tuning and variant and keys <= tuned_keys[method]:
            label = f"{method} ({tuning.get('status', 'untuned')})"
        if (label, seed) not in seen:
            seen.add((label, seed))
            out[job] = (label, seed, results)
    return out


def _question_values(
    records: Mapping[str, tuple[str, Any, dict]], views: set[str]
) -> dict[str, dict[tuple[tuple[str, str, str], Any], dict[str, float]]]:
    """label → ((model, base view, metric), seed) → question id → its mean (a forget record's
    paraphrases average into one value: the record is the unit)."""
    wanted = {spec for h in HEADLINES for spec in h.reads.values()}
    out: dict[str, dict] = defaultdict(dict)
    for label, seed, results in records.values():
        for model, base, metric in wanted:
            view = reported(base, views)
            sums: dict[str, list[float]] = defaultdict(list)
            derived = DERIVED.get(metric)
            for row in results["generations"]:
                if row.get("model") != model or row["view"] != view:
                    continue
                if derived is not None and "generation" in row:
                    sums[row["id"]].append(derived(row["generation"]))
                elif metric in row:
                    sums[row["id"]].append(float(row[metric]))
            if sums:
                key = ((model, base, metric), seed)
                out[label][key] = {q: float(np.mean(v)) for q, v in sums.items()}
    return out


def _inputs(
    headline: Headline, per_label: Mapping, universes: Mapping[str, list[str]]
) -> dict[str, tuple[str, np.ndarray]] | None:
    """Per name a headline reads: its pool and its [seeds × questions] values; None if missing."""
    inputs = {}
    for name, spec in headline.reads.items():
        seeds = sorted(seed for (s, seed) in per_label if s == spec)
        if not seeds and name in headline.optional:
            continue
        if not seeds:
            return None
        ids = universes[pool(spec[1])]
        matrix = np.array(
            [[per_label[(spec, seed)].get(q, math.nan) for q in ids] for seed in seeds]
        )
        inputs[name] = (pool(spec[1]), matrix)
    shapes = {m.shape[0] for _, m in inputs.values()}
    return inputs if len(shapes) == 1 else None


def _setup(records: Mapping[str, tuple[str, Any, dict]], labels: list[str]) -> pd.DataFrame:
    """Per method: tuned or not, its parameters, the trial budget and best objective, the stopping
    rule's steps, and the unlearning phase's costs and wall time (means over seeds)."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for label, _, results in records.values():
        by_label[label].append(results)
    rows = {}
    for label in labels:
        runs = by_label[label]
        tuning = runs[0].get("tuning") or {}
        stopping = [r.get("method_metrics", {}).get("stopping") or {} for r in runs]
        costs = [r.get("costs", {}).get("unlearn", {}) for r in runs]
        row = {
            "seeds": len(runs),
            "tuning": tuning.get("status", "untuned"),
            "params": ", ".join(
                f"{k}={_short(v)}" for k, v in (tuning.get("params") or {}).items()
            ),
            "trials": tuning.get("n_trials"),
            "dev objective": tuning.get("objective"),
            "stopping": stopping[0].get("rule", "—"),
            "steps": _mean([s.get("steps") for s in stopping]),
            "stopped early": _mean([s.get("stopped_early") for s in stopping]),
            "unlearn (s)": _mean([r.get("timings_s", {}).get("unlearn") for r in runs]),
        }
        row.update({name: _mean([c.get(name) for c in costs]) for name in COST_COLUMNS})
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _mean(values: list[Any]) -> float:
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return float(np.mean(numbers)) if numbers else math.nan


def _markdown(table: pd.DataFrame, n_boot: int, views: tuple[str, ...] = ()) -> str:
    """``mean [low, high]`` per headline; ★ the best, = tied with it (paired interval holds 0)."""
    shown = pd.DataFrame(index=table.index)
    for headline in HEADLINES:
        if f"{headline.name} mean" not in table:
            continue
        marks = {"best": " ★", "tied": " ="}
        shown[headline.name] = [
            "—"
            if math.isnan(row[f"{headline.name} mean"])
            else f"{row[f'{headline.name} mean']:.3f} [{row[f'{headline.name} low']:.3f}, "
            f"{row[f'{headline.name} high']:.3f}]{marks.get(row[f'{headline.name} rank'], '')}"
            for _, row in table.iterrows()
        ]
    note = (
        f"Mean over seeds [95% bootstrap interval, {n_boot} resamplings of the questions, the same "
        "draw for every seed and method]; ★ best, = tied with the best (their paired difference's "
        "interval holds 0)."
    )
    if views:
        note += f" Views read: {', '.join(views)}."
    return note + "\n\n" + tabulate(shown, headers="keys", tablefmt="github")


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The methods no other method beats on both axes (higher is better on each)."""
    return [
        a
        for a, (x, y) in points.items()
        if not any(
            (ox >= x and oy >= y) and (ox > x or oy > y) for b, (ox, oy) in points.items() if b != a
        )
    ]


def plot_pareto(comparison: Comparison) -> Figure | None:
    """Forget efficacy against retain utility per method, whiskers the 95% intervals; the Pareto
    front joined by a line. None when the evaluation lacks the views of either axis."""
    axes = ["forget efficacy mean", "retain utility mean"]
    if not set(axes) <= set(comparison.table.columns):
        return None
    table = comparison.table.dropna(subset=axes)
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    points = {}
    for i, (label, row) in enumerate(table.iterrows()):
        x, y = row["retain utility mean"], row["forget efficacy mean"]
        points[label] = (x, y)
        untuned = comparison.setup.loc[label, "tuning"] != "tuned"
        ax.errorbar(
            x, y,
            xerr=[[x - row["retain utility low"]], [row["retain utility high"] - x]],
            yerr=[[y - row["forget efficacy low"]], [row["forget efficacy high"] - y]],
            color=f"C{i % 10}", marker="o" if not untuned else "s", capsize=3,
            label=f"{label}{' (untuned)' if untuned else ''}",
        )  # fmt: skip
    front = sorted((points[label] for label in pareto_front(points)), key=lambda p: p[0])
    if front:
        ax.plot(*zip(*front, strict=True), color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("retain utility (ROUGE-L relative to the target, capped at 1)")
    ax.set_ylabel("forget efficacy (1 − leak rate, forget + paraphrased)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="x-small", loc="lower left")
    return fig


def write_comparison(jobs: pd.DataFrame, out: Path) -> tuple[Comparison | None, dict[str, Path]]:
    """``comparison.{csv,md}``, ``setup.csv`` and ``pareto.png`` under ``out``."""
    comparison = compare(jobs)
    if comparison is None:
        return None, {}
    files = {
        "comparison.csv": out / "comparison.csv",
        "comparison.md": out / "comparison.md",
        "setup.csv": out / "setup.csv",
    }
    comparison.table.to_csv(files["comparison.csv"])
    comparison.setup.to_csv(files["setup.csv"])
    files["comparison.md"].write_text(comparison.markdown() + "\n", "utf-8")
    figure = plot_pareto(comparison)
    if figure is not None:
        files["pareto"] = out / "pareto.png"
        figure.savefig(files["pareto"], dpi=120)
    return comparison, files
