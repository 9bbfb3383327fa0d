"""A sweep's jobs as one DataFrame, read from a Hydra sweep directory or from W&B runs.

One row per job: method, variant, overrides, seed, status, error, every raw metric
(``unlearned/forget/leak_rate``), the five criteria (``criteria/...``), timings (``time/...``).
Failed and missing jobs are rows too (:attr:`Collection.problems`): a sweep is never silently
thinned. A job's *variant* is the config keys that differ between jobs of its method, seed
excepted, so ``method.rationale=true,false`` gives two variants and a seed sweep one.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from benchmarks.evaluation.specs import CRITERIA, criteria, criteria_submetrics
from benchmarks.tracking import flatten, read_offline_run, redact

#: Config keys that do not change a job's results: ``benchmarks.job.NOT_RESULT_SHAPING`` (not
#: imported: that module loads transformers; a test keeps the two equal).
NOT_RESULT_SHAPING = ("tracking", "cache_dir", "force", "tuned_dir")
#: Config keys that never make two jobs different variants.
NOT_VARIANT = ("seed", *NOT_RESULT_SHAPING)
#: Sections of results.json that are about the job, not its results (``target``: which model).
NOT_RESULTS = ("status", "method", "seed", "config", "job_key", "data", "target", "versions",
               "generations", "error", "traceback", "reused_from", "timings_s")  # fmt: skip
#: The columns of a job row that describe the job rather than its results.
META = [
    "job", "method", "variant", "label", "seed", "status", "error", "overrides", "reused_from",
    "path",
]  # fmt: skip


def job_criteria(flat: Mapping[str, Any]) -> dict[str, float]:
    """The five criteria of a job's unlearned model, from its flattened record.

    The evaluation reports them (``results["criteria"]``, flattened as
    ``criteria/unlearned/<name>``, or ``criteria/<name>`` for the unlearned model alone): those
    are taken as they are. Records without them (results files from before the evaluation suite)
    get them from their view means by the criteria's one definition, the metric spec registry's
    (:func:`benchmarks.evaluation.specs.criteria_submetrics`, harmonic means), which reads a split
    view's test half where that was evaluated; a criterion with a sub-metric such a record lacks
    (the judge's, an attack's) stays NaN.
    """
    reported = {
        name: flat.get(f"criteria/unlearned/{name}", flat.get(f"criteria/{name}"))
        for name in CRITERIA
    }
    if any(_is_number(v) for v in reported.values()):
        return {name: _number(v) for name, v in reported.items()}

    def lookup(view: str, key: str) -> float | None:
        value = flat.get(f"unlearned/{view}/{key}")
        return float(value) if _is_number(value) else None

    views = {
        key.split("/")[1] for key in flat if key.startswith("unlearned/") and key.count("/") == 2
    }
    subs, _ = criteria_submetrics(lookup, views, attacks=())
    return {name: _number(value) for name, value in criteria(subs).items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


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


# ---------------------------------------------------------------------------------- sweep dirs


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = multirun.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(multirun.hydra.overrides.task)
    choices = []  # the basic sweeper's order: the cartesian product of the overrides as given
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        choices.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*choices)]


def _sweep_wandb(sweep_dir: Path, dirs: list[Path], jobs: list[_Job]) -> tuple[str, str, str]:
    """The W&B group, project and mode of a sweep: as its jobs' runs recorded them if any ran
    with W&B, else as run.py would have named the group (the sweep dir, ``/`` → ``_``)."""
    runs = [r for d in dirs for r in sorted((d / "wandb").glob("offline-run-*"))]
    multirun = _multirun(sweep_dir)
    config = next((j.config for j in jobs if j.config), {})
    wandb_cfg = config.get("tracking", {}).get("wandb", {})
    if runs:
        group = _read_offline(runs[0]).group
    elif wandb_cfg.get("group"):
        group = wandb_cfg["group"]
    else:
        where = multirun.hydra.sweep.dir if multirun is not None else sweep_dir
        group = Path(str(where)).as_posix().replace("/", "_")
    return group, wandb_cfg.get("project", "unstar-bench"), wandb_cfg.get("mode", "offline")


# ------------------------------------------------------------------------------------ W&B runs


@dataclass
class WandbRun:
    """One W&B run as read; ``started``: its start time, a string that sorts in time order."""

    name: str
    where: str
    group: str | None
    config: dict[str, Any]
    summary: dict[str, Any]
    started: str


def read_wandb(source: str, group: str | None = None) -> Collection:
    """W&B runs: offline run directories under a local path, else ``entity/project`` online.

    One row per job: runs of the same job (a killed sweep's abandoned run beside its re-run) give
    the latest that finished (status ok), else the latest.
    """
    path = Path(source)
    if path.exists():
        runs = [_read_offline(d) for d in sorted({f.parent for f in path.rglob("run-*.wandb")})]
    else:
        runs = list(_read_api(source, group))
    runs = [r for r in runs if "summary_of" not in r.config and (group is None or r.group == group)]
    jobs = [_wandb_job(run) for run in one_run_per_job(runs)]
    groups = [r.group for r in runs if r.group]
    tracking = next((j.config.get("tracking", {}).get("wandb", {}) for j in jobs if j.config), {})
    return Collection(
        _frame(jobs),
        source,
        group or (max(set(groups), key=groups.count) if groups else None),
        tracking.get("project") or (source.split("/")[-1] if not path.exists() else "unstar-bench"),
        tracking.get("mode", "offline"),
    )


def one_run_per_job(runs: list[WandbRun]) -> list[WandbRun]:
    """Per job, its latest run with status ok, else its latest run, in the order given.

    A job is its config less :data:`NOT_RESULT_SHAPING`, what its ``job_key`` hashes (less the
    harness code hash, which W&B does not record); a run with no config is a job of its own.
    """
    chosen: dict[str, WandbRun] = {}
    for run in runs:
        job = _job_identity(run.config)
        if job is None:
            continue
        if job not in chosen or _preference(run) >= _preference(chosen[job]):
            chosen[job] = run
    kept = {id(run) for run in chosen.values()}
    return [r for r in runs if id(r) in kept or _job_identity(r.config) is None]


def _job_identity(config: Mapping[str, Any]) -> str | None:
    shaping = {
        k: v for k, v in config.items() if k not in NOT_RESULT_SHAPING and not k.startswith("_")
    }
    return json.dumps(shaping, sort_keys=True, default=str) if shaping else None


def _preference(run: WandbRun) -> tuple[bool, str]:
    return run.summary.get("status") == "ok", run.started


def _read_offline(run_dir: Path) -> WandbRun:
    from google.protobuf.message import DecodeError

    # W&B names a run directory (offline-)run-YYYYMMDD_HHMMSS-ID after its start time.
    stamp = re.search(r"run-(\d{8}_\d{6})-", run_dir.name)
    started = stamp.group(1) if stamp else ""
    try:
        run = read_offline_run(run_dir)
    except (DecodeError, ValueError, OSError) as err:
        error = f"unreadable W&B run: {type(err).__name__}: {err}"
        summary = {"status": "unreadable", "error": error}
        return WandbRun(run_dir.name, str(run_dir), None, {}, summary, started)
    return WandbRun(
        run.get("name") or run_dir.name,
        str(run_dir),
        run["group"],
        run["config"],
        run["summary"],
        started,
    )


def _read_api(project: str, group: str | None) -> Iterable[WandbRun]:
    """Runs of an online project (``entity/project``); the only path no test can exercise."""
    import wandb

    for run in wandb.Api().runs(project, filters={"group": group} if group else None):
        summary = dict(run.summary_metrics)
        yield WandbRun(run.name, run.url, run.group, dict(run.config), summary, run.created_at)


def _wandb_job(run: WandbRun) -> _Job:
    """A W&B run as a job: the Tracker mirrors results.json's metrics into the run's summary."""
    config = {k: v for k, v in run.config.items() if not k.startswith("_")}
    status = run.summary.get("status", "missing")
    error = run.summary.get("error", "" if "status" in run.summary else "no final status: killed?")
    flat = {
        k: v
        for k, v in run.summary.items()
        if _is_number(v) and not k.startswith(("_", "generations/"))
    }
    return _Job(run.name, run.where, status, config, flat, error=error)


# ----------------------------------------------------------------------------------- the frame


def _frame(jobs: list[_Job]) -> pd.DataFrame:
    """One row per job, with method, variant and label known across the whole sweep."""
    variants = _variants(jobs)
    rows = []
    for job, variant in zip(jobs, variants, strict=True):
        method = job.config.get("method", {}).get("name") or _override(job.overrides, "method")
        seed = job.config.get("seed", _override(job.overrides, "seed"))
        derived = {f"criteria/{k}": v for k, v in job_criteria(job.flat).items()}
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
