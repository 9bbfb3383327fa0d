"""One job end to end on the tiny model: the results contract every consumer (analysis.collect,
W&B, the notebook) relies on, determinism, the target cache, and how a failing method is recorded.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

import benchmarks.job
import benchmarks.target
from benchmarks.job import job_key, run_job
from benchmarks.methods import METHODS

#: Seconds, not minutes: a few optimiser steps; force: each job really runs, never skipped as a
#: repeat of an identical job that finished earlier in the session.
QUICK = ("method=grad_ascent", "method.max_steps=2", "target.train.max_steps=3", "force=true")
#: The evaluation suite (attacks, privacy, criteria) is tested on its own; the contract test
#: keeps it on, the rest need only the core metrics.
NO_SUITE = "eval.suite=[]"
#: The default views the data has questions for: forget and the dev and test halves of the rest.
VIEWS = {"forget"} | {
    f"{base}_{part}"
    for base in ("forget_paraphrased", "hard_retain", "answer_sharing_retain", "general_retain")
    for part in ("dev", "test")
}
KEPT = {"forget_facts_retained_dev", "forget_facts_retained_test"}
METRICS = {"rougeL_recall", "answer_prob", "leak_rate", "truth_preference"}
PHASES = ["load_model", "load_data", "prepare_target", "eval_target", "unlearn", "eval_unlearned"]
ROW_KEYS = {"model", "view", "id", "question", "answer", "generation"}


def read_results(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "results.json").read_text("utf-8"))


def test_results_file_meets_the_contract(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    returned = run_job(make_cfg(*QUICK), tmp_path / "job")
    results = read_results(tmp_path / "job")

    assert results["status"] == "ok"
    assert results["method"] == "grad_ascent"
    assert results["seed"] == 0
    assert results["config"]["method"]["name"] == "grad_ascent"
    assert results["config"]["eval"]["max_new_tokens"] == 8, "config is resolved and unredacted"
    for model in ("target", "unlearned"):
        per_view = results["metrics"][model]
        assert set(per_view) == VIEWS
        for view, values in per_view.items():
            assert set(values) == {"n", *METRICS}, (model, view)
            asked_here = [
                r for r in results["generations"] if (r["model"], r["view"]) == (model, view)
            ]
            means = {k: v for k, v in values.items() if k != "n"}
            assert values["n"] == len(asked_here), (model, view)
            assert all(isinstance(v, float) and math.isfinite(v) for v in means.values())
    assert list(results["timings_s"])[: len(PHASES)] == PHASES
    assert all(phase.startswith("suite/") for phase in list(results["timings_s"])[len(PHASES) :])
    assert all(seconds >= 0 for seconds in results["timings_s"].values())
    assert {"torch", "transformers"} <= set(results["versions"])
    assert results["cpu_threads"] == len(os.sched_getaffinity(0)), "every core it may use"

    rows = results["generations"]
    assert all(set(row) >= ROW_KEYS for row in rows)
    asked = {
        model: [(r["view"], r["id"], r["question"]) for r in rows if r["model"] == model]
        for model in ("target", "unlearned")
    }
    assert asked["target"] == asked["unlearned"], "both models are asked the same questions"
    assert {view for view, _, _ in asked["target"]} >= VIEWS  # and the suite's attacks
    assert returned["metrics"] == results["metrics"]


def test_threads_override_sets_torch_threads(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    before = torch.get_num_threads()
    try:
        results = run_job(make_cfg(*QUICK, NO_SUITE, "threads=1"), tmp_path / "job")
        assert results["cpu_threads"] == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_forget_facts_set_adds_the_kept_facts(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = run_job(make_cfg(*QUICK, NO_SUITE, "data.forget_set=forget_facts"), tmp_path / "job")
    for model in ("target", "unlearned"):
        assert set(results["metrics"][model]) == VIEWS | KEPT
        assert all(set(results["metrics"][model][view]) == {"n", *METRICS} for view in KEPT)


def test_same_seed_gives_identical_results(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run gets its own cache, so both train the target and evaluate it from scratch."""
    runs = []
    for name in ("a", "b"):
        monkeypatch.setenv("UNSTAR_BENCH_CACHE", str(tmp_path / f"cache-{name}"))
        runs.append(run_job(make_cfg(*QUICK, NO_SUITE), tmp_path / name))
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert runs[0]["generations"] == runs[1]["generations"]


def test_finetuned_target_is_cached_by_content(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNSTAR_BENCH_CACHE", str(tmp_path / "cache"))
    trainings: list[str] = []
    train = benchmarks.target.train

    def counted(*args: Any, **kwargs: Any) -> Any:
        trainings.append(kwargs["phase"])
        return train(*args, **kwargs)

    monkeypatch.setattr(benchmarks.target, "train", counted)
    target = (NO_SUITE, "target.train.max_steps=8")
    first = run_job(make_cfg(*QUICK, *target), tmp_path / "first")
    weights = Path(first["target"]["path"]) / "model.safetensors"
    built = weights.stat().st_mtime_ns

    second = run_job(make_cfg(*QUICK, *target), tmp_path / "second")
    assert second["target"]["path"] == first["target"]["path"]
    assert weights.stat().st_mtime_ns == built
    assert trainings == ["target"], "the second job must load the cached target, not train"
    assert second["timings_s"]["prepare_target"] < first["timings_s"]["prepare_target"]

    changed = run_job(make_cfg(*QUICK, *target, "target.train.lr=5e-4"), tmp_path / "changed")
    assert changed["target"]["path"] != first["target"]["path"]
    assert trainings == ["target", "target"]


def test_failing_method_is_recorded(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Any, *args: Any) -> Any:
        raise RuntimeError("boom in unlearn")

    monkeypatch.setattr(METHODS.get("grad_ascent"), "unlearn", explode)
    cfg = make_cfg(*QUICK, NO_SUITE)

    with pytest.raises(RuntimeError, match="boom in unlearn"):
        run_job(cfg, tmp_path / "raised")
    recorded = read_results(tmp_path / "raised")
    assert recorded["status"] == "failed"
    assert recorded["error"] == "RuntimeError: boom in unlearn"
    assert "Traceback" in recorded["traceback"] and "explode" in recorded["traceback"]
    assert "unlearn" in recorded["timings_s"] and "eval_unlearned" not in recorded["timings_s"]
    assert {"torch", "transformers"} <= set(recorded["versions"])

    returned = run_job(cfg, tmp_path / "returned", raise_errors=False)
    assert returned["status"] == "failed"
    assert returned["error"] == "RuntimeError: boom in unlearn"
    assert read_results(tmp_path / "returned")["status"] == "failed"


def test_job_key_ignores_where_results_go_but_not_a_code_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = {"seed": 0, "method": {"name": "npo"}, "tracking": {"mode": "offline"}}
    before = job_key(config)
    assert job_key({**config, "tracking": {"mode": "online"}, "force": True}) == before
    assert job_key({**config, "seed": 1}) != before
    monkeypatch.setattr(benchmarks.job, "harness_code", lambda: "an edited method")
    assert job_key(config) != before


def test_job_key_follows_the_contents_of_the_users_data_file(tmp_path: Path) -> None:
    data_file = tmp_path / "qa.csv"
    data_file.write_text("question,answer\nQ?,A\n")
    config = {"seed": 0, "data": {"name": "qa_file", "path": str(data_file)}}
    before = job_key(config)
    assert job_key(config) == before
    data_file.write_text("question,answer\nQ?,B\n")
    assert job_key(config) != before


def test_interrupt_is_recorded_then_raised(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Any, *args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(METHODS.get("grad_ascent"), "unlearn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(make_cfg(*QUICK, NO_SUITE), tmp_path / "job")
    recorded = read_results(tmp_path / "job")
    assert recorded["status"] == "interrupted"
    assert recorded["error"] == "interrupted by SIGINT"


def test_sigterm_is_recorded_then_handled_as_before(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal goes on to the handler that was there before (by default: the process ends)."""

    class Terminated(Exception):
        pass

    def terminate(self: Any, *args: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)

    def previous(signum: int, frame: Any) -> None:
        raise Terminated

    monkeypatch.setattr(METHODS.get("grad_ascent"), "unlearn", terminate)
    before = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(Terminated):
            run_job(make_cfg(*QUICK, NO_SUITE), tmp_path / "job")
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)
    recorded = read_results(tmp_path / "job")
    assert recorded["status"] == "interrupted"
    assert recorded["error"] == "interrupted by SIGTERM"


def test_torchrun_records_once(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """Two CPU processes (gloo) train together; only rank 0 evaluates, writes results.json and
    opens a W&B run, and both exit cleanly."""
    torchrun = Path(sys.executable).parent / "torchrun"
    job_dir = tmp_path / "ddp"
    launch = [str(torchrun), "--standalone", "--nproc_per_node", "2", "run.py"]
    job = ["model=tiny_random", "eval=quick", "target=base", "tracking=wandb_offline", "force=true"]
    done = subprocess.run(
        [*launch, *job, "method=grad_ascent", "method.max_steps=2", f"hydra.run.dir={job_dir}"],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in job_dir.glob("results*.json")] == ["results.json"]
    assert read_results(job_dir)["status"] == "ok"
    assert "tracking_error" not in read_results(job_dir)
    assert len(list((job_dir / "wandb").glob("offline-run-*"))) == 1
    assert done.stdout.count("grad_ascent (seed 0)") == 1, "one process prints the summary"
