"""Sweeps that survive, run for real through ``python run.py -m``: a failing job must not stop the
others, a restarted sweep must redo only what did not finish, a kill mid-write must never leave
half a results file, and the scale-out launchers must compose with run.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY

from analysis.collect import main
from analysis.runs import read_sweep, read_wandb
from benchmarks.tracking import read_offline_run, record, write_results

ROOT = Path(__file__).resolve().parents[1]
#: A job in seconds: the tiny model, one unlearning step. Tracking is chosen per sweep.
JOB = [o for o in TINY if not o.startswith("tracking=")] + [
    "method=grad_ascent",
    "method.max_steps=1",
]
#: Two jobs that finish and two whose bad forget set fails inside run_job, after composition.
FAILING = ["data.forget_set=forget_1,nope", "seed=11,12", "tracking=wandb_offline", *JOB]


def run_sweep(sweep_dir: Path, cache: Path, *overrides: str) -> str:
    """``python run.py -m`` in a subprocess (as a user runs it); its output, for diagnosis."""
    command = [sys.executable, "run.py", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    # One thread per process: tiny models gain nothing from threads and parallel jobs contend.
    env = {**os.environ, "UNSTAR_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def job_dir(sweep_dir: Path, num: int) -> Path:
    return sweep_dir / str(num)


def results(sweep_dir: Path, num: int) -> dict[str, Any]:
    return json.loads((job_dir(sweep_dir, num) / "results.json").read_text("utf-8"))


def offline_runs(sweep_dir: Path, num: int) -> list[Path]:
    return sorted((job_dir(sweep_dir, num) / "wandb").glob("offline-run-*"))


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> Path:
    """Jobs 0, 1: forget_1, seeds 11 and 12 (finish); jobs 2, 3: forget set ``nope`` (fail)."""
    sweep_dir = tmp_path_factory.mktemp("failing") / "sweep"
    run_sweep(sweep_dir, isolated_cache, *FAILING)
    return sweep_dir


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(
    failing_sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [results(failing_sweep, n)["status"] for n in range(4)] == [
        "ok",
        "ok",
        "failed",
        "failed",
    ]
    failed = results(failing_sweep, 3)
    assert "no forget set 'nope'" in failed["error"] and "Traceback" in failed["traceback"]

    assert main([str(failing_sweep)]) == 0
    printed = capsys.readouterr().out
    assert "4 jobs" in printed and "2 ok, 2 failed" in printed
    assert printed.count("no forget set 'nope'") == 2
    problems = (failing_sweep / "analysis" / "problems.csv").read_text()
    assert problems.count("failed") == 2
    summary = read_sweep(failing_sweep).jobs.set_index("job")
    assert summary["label"].nunique() == 2, "the good and the bad forget set are separate variants"


def test_a_sweeps_wandb_runs_share_a_group_and_the_summary_run_joins_it(
    failing_sweep: Path,
) -> None:
    runs = [read_offline_run(offline_runs(failing_sweep, n)[0]) for n in range(4)]
    group = str(failing_sweep).replace("/", "_")
    assert {run["group"] for run in runs} == {group}
    assert len({run["id"] for run in runs}) == 4
    assert [run["config"]["data"]["forget_set"] for run in runs] == ["forget_1"] * 2 + ["nope"] * 2
    assert runs[3]["summary"]["status"] == "failed" and "nope" in runs[3]["summary"]["error"]

    out = failing_sweep / "analysis"
    assert main([str(failing_sweep), "--out", str(out), "--log-wandb"]) == 0
    (summary_dir,) = (out / "wandb").glob("offline-run-*")
    summary = read_offline_run(summary_dir)
    assert summary["group"] == group
    logged = {key: value for row in summary["history"] for key, value in row.items()}
    assert logged["comparison/_type"] == logged["relative_to_best/_type"] == "table-file"
    table = next(summary_dir.rglob("comparison*.table.json")).read_text()
    assert "grad_ascent (data.forget_set=forget_1)" in table

    from_wandb = read_wandb(str(failing_sweep)).jobs  # the summary run is not a job
    assert sorted(from_wandb["status"]) == ["failed", "failed", "ok", "ok"]
    assert from_wandb["unlearned/forget/leak_rate"].notna().sum() == 2


def test_a_restarted_sweep_reruns_only_unfinished_jobs(
    failing_sweep: Path, isolated_cache: Path, tmp_path: Path
) -> None:
    # A copy of the sweep as if killed during job 1: no results.json, no entry in the index of
    # finished jobs (a copy, so that the other tests see the sweep whole whatever their order).
    killed_sweep = shutil.copytree(
        failing_sweep, tmp_path / "killed", ignore=shutil.ignore_patterns("analysis")
    )
    killed = job_dir(killed_sweep, 1) / "results.json"
    key = json.loads(killed.read_text("utf-8"))["job_key"]
    killed.unlink()
    (isolated_cache / "results" / f"{key}.json").unlink()
    problems = read_sweep(killed_sweep).problems
    assert list(problems["status"]) == ["missing", "failed", "failed"]

    # The same sweep again, in a new sweep dir as the default ${now} dir gives, and on the joblib
    # launcher (parallel processes): skips and failures must hold there too.
    restarted = tmp_path / "restarted"
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    output = run_sweep(restarted, isolated_cache, *joblib, *FAILING)
    assert "Joblib.Parallel(n_jobs=2" in output

    kept = results(restarted, 0)
    assert kept["reused_from"] == str(job_dir(failing_sweep, 0) / "results.json")
    assert not offline_runs(restarted, 0), "a finished job must not run again"
    for num in (1, 2, 3):
        assert "reused_from" not in results(restarted, num)
        assert len(offline_runs(restarted, num)) == 1
    assert results(restarted, 1)["status"] == "ok"
    assert list(read_sweep(restarted).jobs["status"]) == ["ok", "ok", "failed", "failed"]


def test_submitit_runs_a_sweep(tmp_path: Path, isolated_cache: Path) -> None:
    """submitit_local: each job in its own process through submitit, as on SLURM."""
    sweep_dir = tmp_path / "sweep"
    launcher = "hydra/launcher=submitit_local"
    run_sweep(sweep_dir, isolated_cache, launcher, "seed=21,22", "tracking=none", *JOB)

    for num in (0, 1):
        record = results(sweep_dir, num)
        assert record["status"] == "ok" and "reused_from" not in record
    submitted = [p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]
    assert len(submitted) == 2, "one submitit job (its folder named by job id) per sweep job"


def test_slurm_launcher_is_submitit_with_one_gpu_per_job() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1


@pytest.mark.parametrize("fail", ["json.dumps", "os.replace", "os.fsync"])
def test_a_failed_write_leaves_the_old_results_file(
    fail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.json"
    old = {"status": "ok", "metrics": {"unlearned": {"forget": {"leak_rate": 0.5}}}}
    write_results(path, record(old))
    before = (tmp_path / "results.json").read_text("utf-8")

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise OSError(f"killed in {fail}")

    monkeypatch.setattr(fail, crash)  # before the text is made, before the rename, mid-write
    with pytest.raises(OSError, match="killed"):
        write_results(path, record({**old, "status": "failed"}))

    assert (tmp_path / "results.json").read_text("utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "no partial file left"
