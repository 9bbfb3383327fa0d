"""A sweep → one DataFrame of jobs → comparison tables and plots.

``python -m analysis.collect SWEEP_DIR [--out DIR] [--log-wandb]`` reads every job of a Hydra
sweep directory: its ``results.json``, or, for a job that never wrote one, its ``.hydra`` record;
jobs that ``multirun.yaml`` promised but that never got a directory are listed too.
``--wandb DIR`` reads the W&B runs under DIR instead (offline run directories, read locally with
:func:`benchmarks.tracking.read_offline_run`); ``--wandb ENTITY/PROJECT [--group G]`` reads a
project through ``wandb.Api`` (needs a server and a key, so no test covers that path).

It writes, under ``--out`` (default ``SWEEP_DIR/analysis``):

- ``jobs.csv``: one row per job: method, variant, overrides, seed, status, error, every raw metric
  (``unlearned/forget/leak_rate``), the five criteria (``criteria/...``), timings (``time/...``);
- ``problems.csv``: failed and missing jobs, also printed: a sweep is never silently thinned;
- ``summary.{csv,md,tex}``: mean ± std (sample std, ddof=1) over seeds per method and variant;
- ``normalised.{csv,md,tex}``: the paper's view: each criterion as % of the best method's mean;
- ``criteria_bars.png``, ``criteria_radar.png``, ``efficacy_vs_utility.png``.

Rows are grouped by method and *variant*: the config keys that differ between jobs of the same
method, seed excepted, so ``method.rationale=true,false`` gives two rows and a seed sweep one.
``--log-wandb`` logs the tables and plots to a summary W&B run in the sweep's group.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from tabulate import tabulate

from benchmarks.tracking import flatten, read_offline_run, redact

#: The five WPU criteria (raw values in [0, 1], higher is better) and their short names.
CRITERIA = {
    "unlearning_efficacy": "UE",
    "model_utility": "MU",
    "response_quality": "RQ",
    "hallucination_avoidance": "HA",
    "adversarial_robustness": "AR",
}
#: Config keys that never make two jobs different variants (job.NOT_RESULT_SHAPING, and the seed).
NOT_VARIANT = ("seed", "tracking", "cache_dir", "force")
#: Sections of results.json that are about the job, not its results (``target``: which model).
NOT_RESULTS = ("status", "method", "seed", "config", "job_key", "data", "target", "versions",
               "generations", "error", "traceback", "reused_from", "timings_s")  # fmt: skip
#: Raw metrics shown beside the criteria in the Markdown/LaTeX summary, when a sweep has them.
HEADLINE = {
    "unlearned/forget/rougeL_recall": "forget rougeL",
    "unlearned/forget/leak_rate": "forget leak",
    "unlearned/forget_paraphrased/leak_rate": "paraphrased leak",
    "unlearned/hard_retain/rougeL_recall": "hard-retain rougeL",
    "unlearned/general_retain/rougeL_recall": "general-retain rougeL",
}
PLOTS = ("criteria_bars", "criteria_radar", "efficacy_vs_utility")
#: The columns of a job row that describe the job rather than its results.
META = [
    "job", "method", "variant", "label", "seed", "status", "error", "overrides", "reused_from",
    "path",
]  # fmt: skip


def criteria(flat: Mapping[str, Any]) -> dict[str, float]:
    """The five criteria of a job's unlearned model, from its flattened record.

    The one place that decides them. The evaluation reports them (``results["criteria"]``,
    flattened as ``criteria/unlearned/<name>``, or ``criteria/<name>`` for the unlearned model
    alone): those are taken as they are. Records without them (results files from before the
    evaluation suite, W&B summaries, which mirror only ``metrics``) get a fallback derived as the
    reference maps sub-metrics (harmonic means, unstar_and_wpu_protocol.md §3):
    efficacy = H(1 − forget ROUGE-L, 1 − forget leak rate); utility = H(hard-retain ROUGE-L,
    general-retain ROUGE-L); adversarial robustness = the efficacy formula on the held-out
    paraphrases (the paraphrase attack). Response quality and hallucination avoidance need a judge,
    so they stay NaN there.
    """
    reported = {
        name: flat.get(f"criteria/unlearned/{name}", flat.get(f"criteria/{name}"))
        for name in CRITERIA
    }
    if any(_is_number(v) for v in reported.values()):
        return {name: _number(v) for name, v in reported.items()}

    def metric(split: str, name: str) -> float:
        return _number(flat.get(f"unlearned/{split}/{name}"))

    def forgotten(split: str) -> float:
        return _hmean([1 - metric(split, "rougeL_recall"), 1 - metric(split, "leak_rate")])

    return {
        "unlearning_efficacy": forgotten("forget"),
        "model_utility": _hmean(
            [metric("hard_retain", "rougeL_recall"), metric("general_retain", "rougeL_recall")]
        ),
        "response_quality": math.nan,
        "hallucination_avoidance": math.nan,
        "adversarial_robustness": forgotten("forget_paraphrased"),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


def _hmean(values: Sequence[float]) -> float:
    """Harmonic mean of the values that exist (NaN if none): one bad sub-metric drags it down."""
    present = [v for v in values if not math.isnan(v)]
    if not present:
        return math.nan
    if min(present) <= 0:
        return 0.0
    return len(present) / sum(1 / v for v in present)


# --------------------------------------------------------------------------------------- reading


@dataclass
class Collection:
    """Every job of a sweep (problems included) and where its summary W&B run belongs."""

    jobs: pd.DataFrame
    source: str
    group: str | None
    project: str
    mode: str

    @property
    def problems(self) -> pd.DataFrame:
        columns = ["job", "status", "method", "seed", "overrides", "error", "path"]
        return self.jobs.loc[self.jobs["status"] != "ok", columns]


@dataclass
class _Job:
    """One job as read, before the sweep-wide columns (variant, label) are known."""

    job: str
    path: str
    status: str
    config: dict[str, Any]
    flat: dict[str, Any]
    overrides: str = ""
    error: str = ""
    reused_from: str = ""


def read_sweep(sweep_dir: Path | str, skip: Path | None = None) -> Collection:
    """A Hydra sweep directory's jobs (``skip``: a folder inside it that holds no jobs)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory {sweep_dir}")
    dirs = _job_dirs(sweep_dir, skip)
    jobs = [_read_job_dir(d, sweep_dir) for d in dirs]
    seen = {frozenset(_hydra_overrides(d)) for d in dirs}
    jobs += [
        _Job(
            job=",".join(combo),
            path="",
            status="missing",
            config={},
            flat={},
            overrides=",".join(combo),
            error="never started: no job directory (sweep killed before it)",
        )
        for combo in _promised(sweep_dir)
        if frozenset(combo) not in seen
    ]
    group, project, mode = _sweep_wandb(sweep_dir, dirs, jobs)
    return Collection(_frame(jobs), str(sweep_dir), group, project, mode)


def read_wandb(source: str, group: str | None = None) -> Collection:
    """W&B runs: offline run directories under a local path, else ``entity/project`` online."""
    path = Path(source)
    if path.exists():
        runs = [_read_offline(d) for d in sorted({f.parent for f in path.rglob("run-*.wandb")})]
    else:
        runs = list(_read_api(source, group))
    runs = [r for r in runs if "summary_of" not in r[3] and (group is None or r[2] == group)]
    jobs = [_wandb_job(name, where, config, summary) for name, where, _, config, summary in runs]
    groups = [r[2] for r in runs if r[2]]
    tracking = next((j.config.get("tracking", {}).get("wandb", {}) for j in jobs if j.config), {})
    return Collection(
        _frame(jobs),
        source,
        group or (max(set(groups), key=groups.count) if groups else None),
        tracking.get("project") or (source.split("/")[-1] if not path.exists() else "unstar-bench"),
        tracking.get("mode", "offline"),
    )


RunInfo = tuple[str, str, str | None, dict[str, Any], dict[str, Any]]


def _read_offline(run_dir: Path) -> RunInfo:
    from google.protobuf.message import DecodeError

    try:
        run = read_offline_run(run_dir)
    except (DecodeError, ValueError, OSError) as err:
        error = f"unreadable W&B run: {type(err).__name__}: {err}"
        return run_dir.name, str(run_dir), None, {}, {"status": "unreadable", "error": error}
    return (
        run.get("name") or run_dir.name,
        str(run_dir),
        run["group"],
        run["config"],
        run["summary"],
    )


def _read_api(project: str, group: str | None) -> Iterable[RunInfo]:
    """Runs of an online project (``entity/project``); the only path no test can exercise."""
    import wandb

    for run in wandb.Api().runs(project, filters={"group": group} if group else None):
        yield run.name, run.url, run.group, dict(run.config), dict(run.summary_metrics)


def _wandb_job(name: str, where: str, config: dict[str, Any], summary: dict[str, Any]) -> _Job:
    """A W&B run as a job: the Tracker mirrors results.json's metrics into the run's summary."""
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    status = summary.get("status", "missing")
    error = summary.get("error", "" if "status" in summary else "no final status: killed?")
    flat = {
        k: v
        for k, v in summary.items()
        if _is_number(v) and not k.startswith(("_", "generations/"))
    }
    return _Job(name, where, status, config, flat, error=error)


def _job_dirs(root: Path, skip: Path | None) -> list[Path]:
    """Folders holding a job (``.hydra`` or ``results.json``), not descending into one."""
    found = []
    for here, dirs, files in os.walk(root):
        path = Path(here)
        if ".hydra" in dirs or "results.json" in files:
            found.append(path)
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "wandb" and (path / d) != skip]
    return sorted(found, key=_job_order)


def _job_order(path: Path) -> tuple[float, str]:
    """Hydra's job number first (``10_...`` after ``9_...``), then the name."""
    number = re.match(r"(\d+)_", path.name)
    return (int(number.group(1)) if number else math.inf, str(path))


def _read_job_dir(job_dir: Path, sweep_dir: Path) -> _Job:
    name = job_dir.relative_to(sweep_dir).as_posix() if job_dir != sweep_dir else job_dir.name
    overrides = ",".join(_hydra_overrides(job_dir)) or re.sub(r"^\d+_", "", job_dir.name)
    results_path = job_dir / "results.json"
    if not results_path.exists():
        return _Job(
            name,
            str(job_dir),
            "missing",
            _hydra_config(job_dir),
            {},
            overrides,
            "no results.json: killed, or still running",
        )
    try:
        results = json.loads(results_path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        error = f"unreadable results.json: {err}"
        return _Job(name, str(job_dir), "unreadable", _hydra_config(job_dir), {}, overrides, error)
    sections = {k: v for k, v in results.items() if k not in NOT_RESULTS and isinstance(v, dict)}
    flat = flatten({**sections, "time": results.get("timings_s", {})})
    flat = {_strip_metrics(k): v for k, v in flat.items() if _is_number(v)}
    return _Job(
        name,
        str(job_dir),
        results.get("status", "unreadable"),
        results.get("config") or _hydra_config(job_dir),
        flat,
        overrides,
        results.get("error", ""),
        results.get("reused_from", ""),
    )


def _strip_metrics(key: str) -> str:
    """``metrics/unlearned/forget/x`` → ``unlearned/forget/x``; ``method_metrics/…`` → ``method/…``,
    the names the Tracker gives the same values in W&B, so both sources give the same columns."""
    if key.startswith("metrics/"):
        return key.removeprefix("metrics/")
    if key.startswith("method_metrics/"):
        return "method/" + key.removeprefix("method_metrics/")
    return key


def _hydra_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


def _hydra_config(job_dir: Path) -> dict[str, Any]:
    path = job_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    return redact(OmegaConf.to_container(OmegaConf.load(path), resolve=False))


def _multirun(sweep_dir: Path) -> Any:
    path = sweep_dir / "multirun.yaml"
    return OmegaConf.load(path) if path.exists() else None


def _promised(sweep_dir: Path) -> list[list[str]]:
    """Every job's overrides as Hydra's basic sweeper expands ``multirun.yaml``'s command line."""
    multirun = _multirun(sweep_dir)
    if multirun is None or "BasicSweeper" not in str(multirun.hydra.sweeper.get("_target_")):
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = multirun.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(multirun.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _sweep_wandb(sweep_dir: Path, dirs: list[Path], jobs: list[_Job]) -> tuple[str, str, str]:
    """The W&B group, project and mode of a sweep: as its jobs' runs recorded them if any ran
    with W&B, else as run.py would have named the group (the sweep dir, ``/`` → ``_``)."""
    runs = [r for d in dirs for r in sorted((d / "wandb").glob("offline-run-*"))]
    multirun = _multirun(sweep_dir)
    config = next((j.config for j in jobs if j.config), {})
    wandb_cfg = config.get("tracking", {}).get("wandb", {})
    if runs:
        group = _read_offline(runs[0])[2]
    elif wandb_cfg.get("group"):
        group = wandb_cfg["group"]
    else:
        where = multirun.hydra.sweep.dir if multirun is not None else sweep_dir
        group = Path(str(where)).as_posix().replace("/", "_")
    return group, wandb_cfg.get("project", "unstar-bench"), wandb_cfg.get("mode", "offline")


def _frame(jobs: list[_Job]) -> pd.DataFrame:
    """One row per job, with method, variant and label known across the whole sweep."""
    variants = _variants(jobs)
    rows = []
    for job, variant in zip(jobs, variants, strict=True):
        method = job.config.get("method", {}).get("name") or _override(job.overrides, "method")
        seed = job.config.get("seed", _override(job.overrides, "seed"))
        derived = {f"criteria/{k}": v for k, v in criteria(job.flat).items()}
        # The unlearned model's reported criteria are the derived ones; the target's stay apart.
        repeated = {f"criteria/unlearned/{name}" for name in CRITERIA} | set(derived)
        rows.append(
            {
                "job": job.job,
                "method": method,
                "variant": variant,
                "label": f"{method} ({variant})" if variant else str(method),
                "seed": seed,
                "status": job.status,
                "error": job.error,
                "overrides": job.overrides,
                "reused_from": job.reused_from,
                "path": job.path,
                **derived,
                **{k: v for k, v in job.flat.items() if k not in repeated},
            }
        )
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=META)
    results = sorted((c for c in frame.columns if c not in META), key=_column_order)
    return frame[META + results]


def _column_order(column: str) -> int:
    """Criteria, target, unlearned, the other sections, time; else the order records gave."""
    first = ("criteria/", "target/", "unlearned/")
    if column.startswith(first):
        return next(i for i, p in enumerate(first) if column.startswith(p))
    return 4 if column.startswith("time/") else 3


def _override(overrides: str, key: str) -> Any:
    """A value from a job's ``k=v,k=v`` overrides (for jobs with no config to read it from)."""
    found = re.search(rf"(?:^|,){re.escape(key)}=([^,]*)", overrides)
    return found.group(1) if found else None


def _variants(jobs: list[_Job]) -> list[str]:
    """Per job, ``key=value`` for the config keys that differ among jobs of its method."""
    flats = [
        {
            k.replace("/", "."): v
            for k, v in flatten(job.config).items()
            if k.split("/")[0] not in NOT_VARIANT and not k.startswith("_")
        }
        for job in jobs
    ]
    methods = [flat.get("method.name") for flat in flats]
    variants = []
    for method, flat in zip(methods, flats, strict=True):
        peers = [f for m, f in zip(methods, flats, strict=True) if f and m == method]
        keys = sorted(
            {k for p in peers for k in p} if flat else set(),
            key=lambda k: (not k.startswith("method."), k),
        )
        varying = [k for k in keys if any(p.get(k) != flat.get(k) for p in peers)]
        variants.append(",".join(f"{k}={_show(flat.get(k))}" for k in varying))
    return variants


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------- tables


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


def normalise(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's presentation: each criterion's mean (and std, same scale) as a percentage of
    the best method's mean, so the best scores 100; NaN where no method has the criterion."""
    table = summary[["n"]].copy()
    for name in CRITERIA:
        mean, std = summary[f"criteria/{name} mean"], summary[f"criteria/{name} std"]
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
    columns = {f"criteria/{c}": CRITERIA[c] for c in available_criteria(summary)}
    columns.update({m: header for m, header in HEADLINE.items() if f"{m} mean" in summary})
    if "time/unlearn mean" in summary:
        columns["time/unlearn"] = "unlearn (s)"
    return columns


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pm_table(summary, shown(summary), 3)


def normalised_table(normalised: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    return pm_table(normalised, {c: CRITERIA[c] for c in available_criteria(summary)}, 1)


def to_markdown(table: pd.DataFrame) -> str:
    return tabulate(table, headers="keys", tablefmt="github")


def to_latex(table: pd.DataFrame) -> str:
    return tabulate(table, headers="keys", tablefmt="latex_booktabs")


# ----------------------------------------------------------------------------------------- plots


def plot_bars(summary: pd.DataFrame) -> Figure:
    """One panel per criterion: each method's mean raw value, error bars one std over seeds."""
    names = available_criteria(summary)
    fig = Figure(figsize=(3.2 * max(len(names), 1), 3.6), layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    positions = np.arange(len(summary))
    for ax, name in zip(axes, names, strict=False):
        means = summary[f"criteria/{name} mean"].to_numpy(float)
        stds = np.nan_to_num(summary[f"criteria/{name} std"].to_numpy(float))
        colors = [f"C{i}" for i in range(len(summary))]
        ax.bar(positions, means, yerr=stds, color=colors, capsize=4)
        ax.set_title(name.replace("_", " "))
        ax.set_xticks(positions, summary.index, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("raw value (higher is better)")
    return fig


def plot_radar(normalised: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """The five criteria per method, normalised to the best (100); None under three criteria."""
    names = available_criteria(summary)
    if len(names) < 3:
        return None
    angles = np.linspace(0, 2 * np.pi, len(names), endpoint=False)
    closed = np.append(angles, angles[0])
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot(projection="polar")
    for i, (label, row) in enumerate(normalised.iterrows()):
        values = np.nan_to_num([row[f"{n} mean"] for n in names])
        ax.plot(closed, np.append(values, values[0]), color=f"C{i}", label=label)
        ax.fill(closed, np.append(values, values[0]), color=f"C{i}", alpha=0.12)
    ax.set_xticks(angles, [CRITERIA[n] for n in names])
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize="small")
    return fig


def plot_scatter(jobs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Forget efficacy against model utility: each job a dot, each method's mean ± std a cross."""
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ok = jobs[jobs["status"] == "ok"]
    x, y = "criteria/model_utility", "criteria/unlearning_efficacy"
    for i, (label, row) in enumerate(summary.iterrows()):
        mine = ok[ok["label"] == label]
        ax.scatter(mine[x], mine[y], color=f"C{i}", alpha=0.4, s=18)
        ax.errorbar(
            row[f"{x} mean"],
            row[f"{y} mean"],
            xerr=np.nan_to_num(row[f"{x} std"]),
            yerr=np.nan_to_num(row[f"{y} std"]),
            color=f"C{i}",
            marker="o",
            capsize=4,
            label=label,
        )
    ax.set_xlabel("model utility")
    ax.set_ylabel("unlearning efficacy")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------- output


@dataclass
class Report:
    """What :func:`write` produced: the tables, and the files it wrote."""

    summary: pd.DataFrame
    normalised: pd.DataFrame
    files: dict[str, Path]


def write(collection: Collection, out: Path | str) -> Report:
    """Write every table and plot of a collection under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"jobs": out / "jobs.csv", "problems": out / "problems.csv"}
    collection.jobs.to_csv(files["jobs"], index=False)
    collection.problems.to_csv(files["problems"], index=False)
    summary = summarise(collection.jobs)
    if summary.empty:
        return Report(summary, pd.DataFrame(), files)
    normalised = normalise(summary)
    tables = {
        "summary": (summary, summary_table(summary)),
        "normalised": (normalised, normalised_table(normalised, summary)),
    }
    for name, (numbers, shown) in tables.items():
        numbers.to_csv(out / f"{name}.csv")
        (out / f"{name}.md").write_text(to_markdown(shown) + "\n", "utf-8")
        (out / f"{name}.tex").write_text(to_latex(shown) + "\n", "utf-8")
        files.update({f"{name}.{ext}": out / f"{name}.{ext}" for ext in ("csv", "md", "tex")})
    figures = {
        "criteria_bars": plot_bars(summary),
        "criteria_radar": plot_radar(normalised, summary),
        "efficacy_vs_utility": plot_scatter(collection.jobs, summary),
    }
    for name, fig in figures.items():
        if fig is not None:
            files[name] = out / f"{name}.png"
            fig.savefig(files[name], dpi=120)
    return Report(summary, normalised, files)


def log_summary_run(collection: Collection, report: Report, out: Path) -> Path:
    """Log the comparison tables (``wandb.Table``) and plots to a summary run in the sweep's
    group, offline unless the sweep ran online; returns the run's local directory."""
    import wandb

    def table(frame: pd.DataFrame) -> wandb.Table:
        frame = frame.reset_index().astype(object)
        return wandb.Table(dataframe=frame.where(frame.notna(), None))

    run = wandb.init(
        project=collection.project,
        group=collection.group,
        name="summary",
        job_type="summary",
        dir=str(out),
        mode=os.environ.get("WANDB_MODE", collection.mode),
        config={
            "summary_of": collection.source,
            "jobs": len(collection.jobs),
            "problems": len(collection.problems),
        },
        reinit="finish_previous",
    )
    stats = [f"{stem} {stat}" for stem in shown(report.summary) for stat in ("mean", "std")]
    comparison = report.summary[["method", "variant", "n", "seeds", *stats]]
    logged = {"comparison": table(comparison), "normalised": table(report.normalised)}
    logged["problems"] = table(collection.problems.set_index("job"))
    logged.update({n: wandb.Image(str(report.files[n])) for n in PLOTS if n in report.files})
    run.log(logged)
    run.finish()
    return Path(run.dir).parent


def describe(collection: Collection, report: Report) -> str:
    """The printout: counts, every problem, and both tables."""
    counts = collection.jobs["status"].value_counts()
    lines = [
        f"{len(collection.jobs)} jobs from {collection.source}: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
    ]
    if len(collection.problems):
        lines.append(f"\nProblems ({len(collection.problems)}, also in problems.csv):")
        lines += [f"  {p.status:<8} {p.job}: {p.error}" for p in collection.problems.itertuples()]
    if report.summary.empty:
        lines.append("\nNo finished jobs: nothing to compare.")
        return "\n".join(lines)
    lines.append("\nPer method, mean ± std over seeds (raw criteria, higher is better):")
    lines.append(to_markdown(summary_table(report.summary)))
    lines.append("\nNormalised to the best method (100 = best), the paper's view:")
    lines.append(to_markdown(normalised_table(report.normalised, report.summary)))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.collect", description=__doc__)
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="a Hydra sweep directory")
    parser.add_argument("--wandb", help="read W&B runs: a local dir of runs, or entity/project")
    parser.add_argument("--group", help="with --wandb: only this W&B group (a sweep)")
    parser.add_argument("--out", type=Path, help="default: SWEEP_DIR/analysis")
    parser.add_argument("--log-wandb", action="store_true", help="log a summary W&B run")
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.wandb is None):
        parser.error("give a SWEEP_DIR or --wandb, not both")
    if args.wandb:
        local = Path(args.wandb)
        out = args.out or (local / "analysis" if local.exists() else Path("outputs/analysis"))
        collection = read_wandb(args.wandb, args.group)
    else:
        out = args.out or args.sweep_dir / "analysis"
        collection = read_sweep(args.sweep_dir, skip=out)
    report = write(collection, out)
    print(describe(collection, report))
    print(
        f"\nWrote {len(report.files)} files to {out}: {', '.join(p.name for p in report.files.values())}"
    )
    if args.log_wandb:
        print(f"Summary W&B run: {log_summary_run(collection, report, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
