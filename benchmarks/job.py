"""One job: load → prepare the target → unlearn → evaluate target and unlearned → record."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import signal
import threading
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
from benchmarks.costs import COSTS
from benchmarks.data import load_data
from benchmarks.data.split import for_methods
from benchmarks.distributed import is_main_process
from benchmarks.estimate import job_estimate
from benchmarks.evaluation.evaluate import evaluate_model
from benchmarks.evaluation.selection import SelectionError, objective
from benchmarks.evaluation.suite import ModelRun, check_suite, run_suite
from benchmarks.heldout import fill_paraphrases, wanted
from benchmarks.methods import METHODS, JobContext, save_unlearned
from benchmarks.models import cache_dir, load_model, use_cpu_threads
from benchmarks.prompting import TRUNCATED, Prompter
from benchmarks.target import (
    evaluate_target,
    load_target,
    prepare_target,
    reference_results,
    target_cache_path,
    with_unknown_counts,
)
from benchmarks.tracking import Tracker, record, write_results
from benchmarks.tuning import apply_tuned

log = logging.getLogger(__name__)


class Timer:
    """Wall-clock seconds per named phase, in the order they ran; the phase's work (steps,
    tokens, forward passes) is counted under the same name in ``COSTS``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with COSTS.phase(phase):
                yield
        finally:
            self.seconds[phase] = round(time.perf_counter() - start, 3)


class OutputDirTaken(RuntimeError):
    """The output dir holds another job's ``results.json``: writing there would destroy them."""


class Interrupted(BaseException):
    """SIGTERM during a job (SIGINT arrives as ``KeyboardInterrupt``): recorded, then re-raised."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name


def run_job(
    cfg: DictConfig,
    output_dir: Path,
    *,
    group: str | None = None,
    raise_errors: bool = True,
    estimate: bool | None = None,
) -> dict[str, Any]:
    """Run one configured job and return its results record (also written to ``results.json``).

    Under a distributed launcher every process runs it; only the main one records anything.
    ``estimate`` prints a GPU memory and time estimate once the model and data are loaded
    (:mod:`benchmarks.estimate`); None: when the model is on a GPU.
    """
    discover()
    tuning = apply_tuned(cfg)  # before the job's identity: tuned parameters are part of it
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.method.name not in METHODS:
        raise KeyError(
            f"method.name={cfg.method.name!r} is not a registered method; "
            f"choose method= from {METHODS.names()}"
        )
    key = job_key(config)
    index = cache_dir(cfg.get("cache_dir")) / "results" / f"{key}.json"
    path = output_dir / "results.json"
    other = _other_job(path, key)
    if other is not None:
        raise OutputDirTaken(
            f"{path} holds the results of another job ({other}); pick another hydra.run.dir "
            "(or move that file away) so that they are not overwritten"
        )
    main = is_main_process()
    if not cfg.get("force"):
        finished = _finished(index, key)
        if finished is not None:
            return _reuse(*finished, path) if main else finished[0]
    if not main:
        # Another process of a distributed launch: it trains alongside the main one, no more.
        validate(cfg)
        _run(cfg, output_dir, Tracker(), Timer(), estimate=False)
        return {"status": "ok", "method": cfg.method.name, "seed": cfg.seed, "job_key": key}
    output_dir.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    results: dict[str, Any] = {
        "status": "failed",
        "method": cfg.method.name,
        "seed": cfg.seed,
        "config": config,
        "job_key": key,
        "tuning": tuning,
    }
    tracker = Tracker()
    with _sigterm_raises():
        try:
            validate(cfg)  # before W&B starts: a bad value fails in a second, recorded below
            tracker = Tracker.start(
                cfg.tracking, config, output_dir, name=f"{cfg.method.name}-s{cfg.seed}", group=group
            )
            results.update(_run(cfg, output_dir, tracker, timer, estimate=estimate))
            results["status"] = "ok"
        except Exception as err:
            results.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            log.error("Job failed: %s (details in %s)", results["error"], path)
            if raise_errors:
                raise
        except (KeyboardInterrupt, Interrupted) as stop:
            name = stop.signal if isinstance(stop, Interrupted) else "SIGINT"
            results.update(status="interrupted", error=f"interrupted by {name}")
            log.error("Job interrupted by %s (recorded in %s)", name, path)
            raise
        finally:
            results["timings_s"] = timer.seconds
            results["costs"] = COSTS.as_dict()
            _record(results, path, index, tracker)
    return results


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` in the block, so the job can record why it stopped
    (its default would end the process on the spot); on the way out the signal goes on to the
    handler that was there before, by default ending the process as usual."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield  # handlers can be set in the main thread only
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    restore = signal.SIG_DFL if previous is None else previous
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except Interrupted:
        signal.signal(signal.SIGTERM, restore)
        signal.raise_signal(signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, restore)


def _record(results: dict[str, Any], path: Path, index: Path, tracker: Tracker) -> None:
    """Write ``results.json`` first, then close the W&B run and add what tracking lost to it;
    index the job as finished only once its results are safely on disk."""
    key = results["job_key"]
    other = _other_job(path, key)
    if other is not None:  # it arrived while this job ran
        taken, path = path, path.with_name(f"results-{key}.json")
        log.error(
            "%s now holds another job's results (%s): this job's go to %s; give each job its "
            "own hydra.run.dir",
            taken,
            other,
            path,
        )
    try:
        write_results(path, record(results))
    except OSError:
        tracker.finish(results, None)  # close the run; the lost results are what to report
        raise
    tracking_error = tracker.finish(results, path)
    if tracking_error:
        results["tracking_error"] = tracking_error
        log.error("Tracking failed: %s (%s is complete)", tracking_error, path)
        try:
            write_results(path, record(results))
        except OSError as err:
            raise OSError(
                err.errno,
                f"{tracking_error}; {path} holds the results but could not record that "
                f"({err.__cause__}): free disk space and re-run with force=true",
            ) from err
    if results["status"] == "ok":
        try:
            atomic_write_text(index, json.dumps({"results": str(path.resolve()), "job_key": key}))
        except OSError as err:
            log.warning("Could not index %s as finished (%s): a re-run will repeat it", path, err)


#: Config keys that do not change a job's results: where it logs, caches, and whether to re-run.
NOT_RESULT_SHAPING = ("tracking", "cache_dir", "force", "tuned_dir")


def job_key(config: dict[str, Any]) -> str:
    """The identity of a job's results: a hash of its resolved config, less where it logs, and of
    the harness code, so that results of an older version are not reused after an update; of the
    data file a user names (``data.path``), so that an edited file is evaluated anew; and of the
    files of a checkpoint it evaluates (``method=none method.checkpoint=DIR``), so that a model
    saved anew in the same directory is evaluated anew."""
    shaping = {k: v for k, v in config.items() if k not in NOT_RESULT_SHAPING}
    stamps = [_data_file_hash(config.get("data") or {})]
    checkpoint = (config.get("method") or {}).get("checkpoint")
    if checkpoint:
        stamps.append(_files_stamp(Path(checkpoint).expanduser()))
    return fingerprint(shaping, harness_code(), *stamps)


def _data_file_hash(data: dict[str, Any]) -> str | None:
    """The SHA-256 of the data file ``data.path`` names, where it names one (QA files are small)."""
    path = Path(str(data.get("path") or "")).expanduser()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _files_stamp(directory: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each file under a directory (cheap for big weights)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return [(str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


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


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object saved earlier, or None if missing or damaged (with a warning naming it)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("Ignoring damaged %s (%s)", path, err)
        return None
    if not isinstance(value, dict):
        log.warning("Ignoring damaged %s (not a JSON object)", path)
        return None
    return value


def _other_job(path: Path, key: str) -> str | None:
    """Who owns the readable results at ``path`` if another job does (a damaged file is nobody's)."""
    results = _read_json(path)
    if results is None or results.get("job_key") == key:
        return None
    method, seed, other = (results.get(k) for k in ("method", "seed", "job_key"))
    return f"method {method}, seed {seed}, job_key {other}"


def _finished(index: Path, key: str) -> tuple[dict[str, Any], Path] | None:
    """Results of an identical job that already finished, and their file (or None)."""
    pointer = _read_json(index)
    if pointer is None or not isinstance(pointer.get("results"), str):
        return None
    source = Path(pointer["results"])
    results = _read_json(source)
    if results is None or results.get("status") != "ok":
        return None
    if results.get("job_key") != key:
        log.warning("%s now holds another job's results; re-running this one", source)
        return None
    return results, source


def _reuse(results: dict[str, Any], source: Path, path: Path) -> dict[str, Any]:
    """Copy an identical finished job's results into this job's ``path``."""
    log.info("Skipping: identical job finished before (%s); force=true re-runs it", source)
    if source.resolve() != path.resolve():
        results = {**results, "reused_from": str(source)}
        write_results(path, results)
    return results


def _run(
    cfg: DictConfig, output_dir: Path, tracker: Tracker, timer: Timer, *, estimate: bool | None
) -> dict[str, Any]:
    TRUNCATED.clear()
    COSTS.clear()
    threads = use_cpu_threads(cfg.get("threads"))
    set_seed(cfg.seed)
    check_suite(cfg.eval)
    cache = cache_dir(cfg.get("cache_dir"))
    prompter = Prompter()
    with timer("load_model"):
        base, tokenizer = load_model(cfg.model, cache, cfg.device)
    with timer("load_data"):
        data = load_data(cfg.data)
    paraphrases = None
    if wanted(cfg.data):  # written by the base model, before the target learns the facts
        with timer("heldout_paraphrases"):
            data, paraphrases = fill_paraphrases(base, tokenizer, data, cfg, cache)
    if estimate or (estimate is None and next(base.parameters()).device.type == "cuda"):
        try:
            print(job_estimate(base, tokenizer, data, cfg), flush=True)
        except Exception as err:  # an estimate never costs the job
            log.warning("No GPU estimate (%s: %s)", type(err).__name__, err)
    with timer("prepare_target"):
        target, data, target_info = prepare_target(
            base, tokenizer, data, cfg, cache=cache, prompter=prompter, log_fn=tracker.log
        )
    if is_main_process():  # other ranks of a distributed launch only train
        with timer("eval_target"):
            target_metrics, target_rows = evaluate_target(
                target, tokenizer, data, cfg.eval, prompter, target_info, cache
            )
            target_metrics = with_unknown_counts(target_metrics, target_info)
    method = METHODS.get(cfg.method.name)(cfg.method)

    def load_base() -> Any:
        return load_model(cfg.model, cache, cfg.device)[0]

    ctx = JobContext(
        seed=cfg.seed,
        output_dir=output_dir,
        cache_dir=cache,
        prompter=prompter,
        log_fn=tracker.log,
        eval_cfg=cfg.eval,
        load_base=load_base,
        model_key=target_info.get("path")
        or fingerprint(OmegaConf.to_container(cfg.model, resolve=True)),
    )
    set_seed(cfg.seed)
    with timer("unlearn"):
        # Methods see the dev paraphrases only; the evaluation below keeps the full data.
        unlearned = method.unlearn(target, tokenizer, for_methods(data), ctx)
    if not is_main_process():
        return {}
    saved = {}
    if cfg.save_model:
        with timer("save_model"):
            model_dir = output_dir / "model"
            saved["saved_model"] = save_unlearned(unlearned, tokenizer, model_dir, cfg.method.name)
    with timer("eval_unlearned"):
        metrics, rows = evaluate_model(
            unlearned.model, tokenizer, data, cfg.eval, unlearned.prompter, "unlearned"
        )
        metrics = with_unknown_counts(metrics, target_info)
    with timer("suite/reference"):
        reference = reference_results(cfg, data, cache=cache, prompter=prompter, log_fn=tracker.log)
    suite = run_suite(
        cfg.eval,
        data=data,
        tokenizer=tokenizer,
        target=ModelRun("target", prompter, target_metrics, target_rows),
        unlearned=ModelRun(
            "unlearned", unlearned.prompter, metrics, rows, unlearned.model, unlearned.wrong_answers
        ),
        load_original=lambda: load_target(cfg, target_info, cache),
        load_base=load_base,
        reference=reference,
        timer=timer,
        target_cache=target_cache_path(
            cache, "suite-target", target_info, cfg.eval, data, prompter
        ),
    )
    try:
        selection = objective(target_metrics, metrics, rows)
    except SelectionError as err:  # an evaluation without the selection views: nothing to tune on
        selection = {"objective": None, "error": str(err)}
    return {
        "selection": selection,
        "data": {
            "name": data.name,
            "counts": {s: len(data.with_role(s)) for s in sorted({r.role for r in data.records})},
            **({"generated_paraphrases": paraphrases} if paraphrases else {}),
        },
        "target": target_info,
        "metrics": {"target": target_metrics, "unlearned": metrics},
        "method_metrics": unlearned.metrics,
        "generations": target_rows + rows,
        "truncated_answers": dict(TRUNCATED),  # by where they were cut: training or scoring
        "cpu_threads": threads,
        **saved,
        **suite,
    }
