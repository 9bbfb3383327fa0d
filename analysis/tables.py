"""Comparison tables of a jobs DataFrame, and their CSV, Markdown and LaTeX files.

``summary``: mean ± std (sample std, ddof=1) over seeds per method and variant;
``relative_to_best``: the paper's view, each criterion as % of the best method's mean;
``robustness``: the unlearned model's forget leak under greedy decoding and under each attack,
the worst case, and the probes that tell removal from obfuscation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from analysis.runs import META
from benchmarks.evaluation.specs import CRITERIA, CRITERIA_SPECS, METRICS, MetricSpec, oriented

#: The five WPU criteria (raw values in [0, 1], higher is better) → their short names, from the
#: metric spec registry.
CRITERIA_SHORT_NAMES = {name: spec.short for name, spec in CRITERIA_SPECS.items()}
#: Per view, how many questions the unlearned model was asked, shown beside the raw metrics.
COUNTS = {"unlearned/forget/n": "forget n"}
#: Worst-case robustness: what the registry's ``worst_case_leak`` is compared as (its direction
#: and range turn it into 1 − the worst-case forget leak over greedy decoding and every attack
#: that ran, so a method that only hides the answer under greedy decoding cannot top the
#: comparison).
WORST_CASE = METRICS.get("worst_case_leak").compared_as
WORST_CASE_LEAK = METRICS.get("worst_case_leak").column


def compared_metrics() -> dict[str, MetricSpec]:
    """The registered metrics a comparison sets relative to the best beside the criteria, by the
    name they are compared as."""
    return {spec.compared_as: spec for _, spec in METRICS.items() if spec.compared_as}


def compared_short_names() -> dict[str, str]:
    """Every compared quantity's short name (worst-case robustness: WR)."""
    metrics = {
        name: "WR" if name == WORST_CASE else spec.short or name
        for name, spec in compared_metrics().items()
    }
    return {**CRITERIA_SHORT_NAMES, **metrics}


def headline() -> dict[str, str]:
    """Raw metrics shown beside the criteria in the Markdown/LaTeX summary, when a sweep has them
    (column stem → header): each registered metric's headline columns, with its direction where
    it has one, and the question counts."""
    columns: dict[str, str] = {}
    for _, spec in METRICS.items():
        arrow = {True: " ↑", False: " ↓", None: ""}[spec.higher_is_better]
        columns |= {stem: header + arrow for stem, header in spec.columns().items()}
    return columns | COUNTS


#: The robustness table's columns after the attacks' (column stem → header).
PROBES = {
    WORST_CASE_LEAK: "worst case",
    "multiple_choice/unlearned/forget/accuracy": "MC accuracy",
    "multiple_choice/unlearned/forget/chance": "MC chance",
    "echo/unlearned/forget_paraphrased_test/echo_rate": "echo rate (test)",
    "echo/unlearned/forget_paraphrased_test/echo_share_of_fabrications": "echo / fabrications (test)",
    "echo/unlearned/forget_paraphrased/echo_rate": "echo rate (whole)",
    "echo/unlearned/forget_paraphrased/echo_share_of_fabrications": "echo / fabrications (whole)",
    "outcomes/unlearned/forget/refusal": "refusal share",
    "outcomes/unlearned/forget/fabrication": "fabrication share",
}
ATTACK_LEAK = re.compile(r"^attacks/unlearned/(?P<name>.+)/leak_rate mean$")


@dataclass
class Report:
    """What ``analysis.collect.write`` produced: the tables, and the files it wrote."""

    summary: pd.DataFrame
    relative_to_best: pd.DataFrame
    files: dict[str, Path]


def summarise(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per method and variant (index: label): n seeds and ``<column> mean`` / ``<column> std``
    for every result column, over the jobs that finished."""
    ok = jobs[jobs["status"] == "ok"]
    results = [c for c in ok.columns if c not in META]
    grouped = ok.groupby("label", sort=False)
    head = grouped.agg(
        method=("method", "first"),
        variant=("variant", "first"),
        n=("seed", "size"),
        seeds=("seed", lambda s: ",".join(str(v) for v in sorted(s))),
    )
    stats = grouped[results].agg(["mean", "std"]) if results else pd.DataFrame(index=head.index)
    stats.columns = [f"{column} {stat}" for column, stat in stats.columns]
    return head.join(stats)


def compared(summary: pd.DataFrame) -> list[str]:
    """What a comparison sets relative to the best: the criteria a sweep has, and the registered
    metrics compared beside them (worst-case robustness) where its jobs have them."""
    metrics = [
        name
        for name, spec in compared_metrics().items()
        if f"{spec.column} mean" in summary and summary[f"{spec.column} mean"].notna().any()
    ]
    return available_criteria(summary) + metrics


def raw_values(summary: pd.DataFrame, name: str) -> tuple[pd.Series, pd.Series]:
    """Mean and std over seeds of a compared quantity, turned so that higher is better: a
    criterion as it is, a registered metric by its spec's direction and range
    (:func:`benchmarks.evaluation.specs.oriented`: ``high − value`` for a lower-is-better metric
    with a range)."""
    metrics = compared_metrics()
    if name in metrics:
        spec = metrics[name]
        mean = summary[f"{spec.column} mean"].map(lambda v: oriented(spec, v))
        return mean, summary[f"{spec.column} std"]
    return summary[f"criteria/{name} mean"], summary[f"criteria/{name} std"]


def relative_to_best(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's presentation: each criterion's mean (and std, same scale) as a percentage of
    the best method's mean, so the best scores 100; NaN where no method has the criterion. The
    registered metrics compared beside them (worst-case robustness where the sweep ran attacks)
    join them, turned so that higher is better first."""
    table = summary[["n"]].copy()
    for name in dict.fromkeys([*CRITERIA, *compared(summary)]):
        mean, std = raw_values(summary, name)
        best = mean.max()
        scale = 100 / best if best > 0 else math.nan
        table[f"{name} mean"], table[f"{name} std"] = mean * scale, std * scale
    return table


def pm_table(frame: pd.DataFrame, columns: Mapping[str, str], digits: int) -> pd.DataFrame:
    """``mean ± std`` strings: ``columns`` maps a column stem (``x`` of ``x mean``) to a header."""
    table = frame[["n"]].copy()
    for stem, header in columns.items():
        pairs = zip(frame[f"{stem} mean"], frame[f"{stem} std"], strict=True)
        table[header] = [_pm(mean, std, digits) for mean, std in pairs]
    return table


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def available_criteria(summary: pd.DataFrame) -> list[str]:
    """Criteria some method has a value for (the rest are not measured by this sweep)."""
    return [c for c in CRITERIA if summary[f"criteria/{c} mean"].notna().any()]


def shown(summary: pd.DataFrame) -> dict[str, str]:
    """The quantities a comparison shows (column stem → header): the criteria a sweep has, the
    headline raw metrics, the time per job."""
    columns = {f"criteria/{c}": CRITERIA_SHORT_NAMES[c] for c in available_criteria(summary)}
    columns.update({m: header for m, header in headline().items() if f"{m} mean" in summary})
    if "time/unlearn mean" in summary:
        columns["time/unlearn"] = "unlearn (s)"
    return columns


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pm_table(summary, shown(summary), 3)


def relative_to_best_table(relative: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    short = compared_short_names()
    names = {c: short[c] for c in compared(summary)}
    return pm_table(relative, names, 1)


def robustness_columns(summary: pd.DataFrame) -> dict[str, str]:
    """The robustness table's columns (stem → header): the greedy forget leak, each attack's leak
    (per setting where it reports several: ``quantization/4bit``, the role ``relearn_related``
    taught), then :data:`PROBES`; those a sweep has."""
    attacks = [m["name"] for c in summary.columns if (m := ATTACK_LEAK.match(c))]
    with_settings = {name.split("/")[0] for name in attacks if "/" in name}
    columns = {"robustness/unlearned/greedy_leak_rate": "greedy"}
    columns |= {f"attacks/unlearned/{n}/leak_rate": n for n in attacks if n not in with_settings}
    columns |= PROBES
    return {stem: header for stem, header in columns.items() if f"{stem} mean" in summary}


def robustness_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pm_table(summary, robustness_columns(summary), 2)


def to_markdown(table: pd.DataFrame) -> str:
    return tabulate(table, headers="keys", tablefmt="github")


def to_latex(table: pd.DataFrame) -> str:
    return tabulate(table, headers="keys", tablefmt="latex_booktabs")


def write_tables(summary: pd.DataFrame, relative: pd.DataFrame, out: Path) -> dict[str, Path]:
    """``summary`` and ``relative_to_best`` as ``.csv`` (numbers), ``.md`` and ``.tex`` (mean ± std)
    under ``out``; returns the files by ``name.ext``."""
    tables = {
        "summary": (summary, summary_table(summary)),
        "relative_to_best": (relative, relative_to_best_table(relative, summary)),
    }
    robustness = robustness_columns(summary)
    if robustness:
        stats = [f"{stem} {stat}" for stem in robustness for stat in ("mean", "std")]
        tables["robustness"] = (summary[["n", *stats]], robustness_table(summary))
    files = {}
    for name, (numbers, text) in tables.items():
        numbers.to_csv(out / f"{name}.csv")
        (out / f"{name}.md").write_text(to_markdown(text) + "\n", "utf-8")
        (out / f"{name}.tex").write_text(to_latex(text) + "\n", "utf-8")
        files.update({f"{name}.{ext}": out / f"{name}.{ext}" for ext in ("csv", "md", "tex")})
    return files
