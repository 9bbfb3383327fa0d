"""One job: load → prepare the target → unlearn → evaluate target and unlearned → record."""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from benchmarks.cache import atomic_write_text, files_fingerprint, fingerprint
from benchmarks.components import discover
from benchmarks.config import validate
from benchmarks.data import load_data
from benchmarks.evaluation.evaluate import evaluate_model
from benchmarks.evaluation.suite import ModelRun, check_suite, run_suite
from benchmarks.methods import METHODS, JobContext
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import TRUNCATED, Prompter
from benchmarks.target import prepare_target
from benchmarks.tracking import Tracker

log = logging.getLogger(__name__)


class Timer:
    """Wall-clock seconds per named phase, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.perf_counter() - start, 3)


def run_job(
    cfg: DictConfig, output_dir: Path, *, group: str | None = None, raise_errors: bool = True
) -> dict[str, Any]:
    """Run one configured job and return its results record (also written to ``results.json``)."""
    discover()
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.method.name not in METHODS:
        raise KeyError(
            f"method.name={cfg.method.name!r} is not a registered method; "
            f"choose method= from {METHODS.names()}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    key = job_key(config)
    index = cache_dir(cfg.get("cache_dir")) / "results" / f"{key}.json"
    if not cfg.get("force"):
        finished = _finished(index, output_dir)
        if finished is not None:
            return finished
    tracker = Tracker(
        cfg.tracking, config, output_dir, name=f"{cfg.method.name}-s{cfg.seed}", group=group
    )
    timer = Timer()
    results: dict[str, Any] = {
        "status": "failed",
        "method": cfg.method.name,
        "seed": cfg.seed,
        "config": config,
        "job_key": key,
    }
    try:
        results.update(_run(cfg, output_dir, tracker, timer))
        results["status"] = "ok"
    except Exception as err:
        results.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        log.error("Job failed: %s (details in %s)", results["error"], output_dir / "results.json")
        if raise_errors:
            raise
    finally:
        results["timings_s"] = timer.seconds
        path = tracker.finish(results)
        if results["status"] == "ok":
            atomic_write_text(index, json.dumps({"results": str(path.resolve())}))
    return results


#: Config keys that do not change a job's results: where it logs, caches, and whether to re-run.
NOT_RESULT_SHAPING = ("tracking", "cache_dir", "force")


def job_key(config: dict[str, Any]) -> str:
    """The identity of a job's results: a hash of its resolved config, less where it logs, and of
    the harness code, so that results of an older version are not reused after an update."""
    shaping = {k: v for k, v in config.items() if k not in NOT_RESULT_SHAPING}
    return fingerprint(shaping, harness_code())


@functools.cache
def harness_code() -> str:
    """A hash of every source and data file of the harness's packages."""
    root = Path(__file__).resolve().parent.parent
    return files_fingerprint(
        root,
        (
            path
            for package in ("benchmarks", "baselines", "unstar")
            for path in (root / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ),
    )


def _finished(index: Path, output_dir: Path) -> dict[str, Any] | None:
    """Results of an identical job that already finished, copied into ``output_dir`` (or None)."""
    if not index.exists():
        return None
    source = Path(json.loads(index.read_text("utf-8"))["results"])
    if not source.exists():
        return None
    results = json.loads(source.read_text("utf-8"))
    if results.get("status") != "ok":
        return None
    log.info("Skipping: identical job finished before (%s); force=true re-runs it", source)
    target = output_dir / "results.json"
    if source.resolve() != target.resolve():
        atomic_write_text(target, json.dumps({**results, "reused_from": str(source)}, indent=2))
    return results


def _run(cfg: DictConfig, output_dir: Path, tracker: Tracker, timer: Timer) -> dict[str, Any]:
    validate(cfg)
    TRUNCATED.clear()
    set_seed(cfg.seed)
    check_suite(cfg.eval)
    cache = cache_dir(cfg.get("cache_dir"))
    prompter = Prompter()
    with timer("load_model"):
        base, tokenizer = load_model(cfg.model, cache, cfg.device)
    with timer("load_data"):
        data = load_data(cfg.data)
    with timer("prepare_target"):
        target, data, target_info = prepare_target(
            base, tokenizer, data, cfg, cache=cache, prompter=prompter, log_fn=tracker.log
        )
    with timer("eval_target"):
        target_metrics, target_rows = _cached_target_eval(
            cfg, cache, target_info, target, tokenizer, data, prompter
        )
    method = METHODS.get(cfg.method.name)(cfg.method)
    ctx = JobContext(
        seed=cfg.seed,
        output_dir=output_dir,
        cache_dir=cache,
        prompter=prompter,
        log_fn=tracker.log,
        load_base=lambda: load_model(cfg.model, cache, cfg.device)[0],
        model_key=target_info.get("path")
        or fingerprint(OmegaConf.to_container(cfg.model, resolve=True)),
    )
    set_seed(cfg.seed)
    with timer("unlearn"):
        unlearned = method.unlearn(target, tokenizer, data, ctx)
    with timer("eval_unlearned"):
        metrics, rows = evaluate_model(
            unlearned.model, tokenizer, data, cfg.eval, unlearned.prompter, "unlearned"
        )
    suite = run_suite(
        cfg,
        cache=cache,
        data=data,
        tokenizer=tokenizer,
        target_info=target_info,
        target=ModelRun("target", prompter, target_metrics, target_rows),
        unlearned=ModelRun("unlearned", unlearned.prompter, metrics, rows, unlearned.model),
        timer=timer,
        log_fn=tracker.log,
    )
    return {
        "data": {
            "name": data.name,
            "counts": {s: len(data.split(s)) for s in sorted({r.split for r in data.records})},
        },
        "target": target_info,
        "metrics": {"target": target_metrics, "unlearned": metrics},
        "method_metrics": unlearned.metrics,
        "generations": target_rows + rows,
        "truncated_answers": dict(TRUNCATED),  # by where they were cut: training or scoring
        **suite,
    }


def _cached_target_eval(cfg, cache, target_info, target, tokenizer, data, prompter):
    """The target's evaluation is the same for every method of a sweep: compute it once."""
    if target_info["kind"] != "finetune":
        return evaluate_model(target, tokenizer, data, cfg.eval, prompter, "target")
    key = fingerprint(
        target_info["path"],
        OmegaConf.to_container(cfg.eval, resolve=True),
        [r.id for r in data.records],
        prompter.system_prompt,
    )
    path = cache / "evals" / f"target-{key}.json"
    if path.exists():
        saved = json.loads(path.read_text("utf-8"))
        return saved["metrics"], saved["rows"]
    metrics, rows = evaluate_model(target, tokenizer, data, cfg.eval, prompter, "target")
    atomic_write_text(path, json.dumps({"metrics": metrics, "rows": rows}))
    return metrics, rows
