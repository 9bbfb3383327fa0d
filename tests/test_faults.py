"""Fault injection around a job's record: a kill or a full disk mid-write, damaged earlier files,
two jobs writing at once, two jobs sharing an output dir. In each case nothing already saved is
lost and nothing wrong is reported as ok.

The job itself is stubbed (:func:`fake_run`) where only the recording is under test, so each test
takes a second; the collision test runs the tiny model end to end.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wandb
from omegaconf import DictConfig, OmegaConf

import benchmarks.cache
import benchmarks.job
from benchmarks.job import OutputDirTaken, job_key, run_job
from benchmarks.tracking import read_offline_run

QUICK = ("method=grad_ascent", "method.max_steps=1", "target.train.max_steps=2", "eval=quick")


def fake_run(
    cfg: DictConfig, output_dir: Path, tracker: Any, timer: Any, **options: Any
) -> dict[str, Any]:
    """What ``_run`` returns, in no time: the recording does not look inside the metrics."""
    tracker.log({"unlearn/forget_loss": 1.0})
    return {"metrics": {"target": {"forget": {"leak_rate": 1.0}}, "unlearned": {}}, "mark": "new"}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(benchmarks.job, "_run", fake_run)
    monkeypatch.setenv("UNSTAR_BENCH_CACHE", str(tmp_path / "cache"))


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def index_of(cfg: DictConfig, cache: Path) -> Path:
    """The finished-job index entry of ``cfg``'s job."""
    return cache / "results" / f"{job_key(OmegaConf.to_container(cfg, resolve=True))}.json"


def full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_kill_mid_write_keeps_the_earlier_results(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(*QUICK, "force=true")
    run_job(cfg, tmp_path / "job")
    before = (tmp_path / "job" / "results.json").read_text()

    def killed(src: str, dst: str) -> None:  # the temp file is written, the rename never happens
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmarks.cache.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, tmp_path / "job")
    assert (tmp_path / "job" / "results.json").read_text() == before
    assert not list((tmp_path / "job").glob(".*partial")), "no half-written file is left"


@pytest.mark.parametrize("damage", ["results", "index"])
def test_damaged_earlier_files_mean_not_finished(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    fake: None,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    cfg = make_cfg(*QUICK)
    first = run_job(cfg, tmp_path / "job")
    damaged = (
        tmp_path / "job" / "results.json"
        if damage == "results"
        else index_of(cfg, tmp_path / "cache")
    )
    damaged.write_text(damaged.read_text()[:40])

    with caplog.at_level(logging.WARNING):
        again = run_job(cfg, tmp_path / "job")
    assert str(damaged) in caplog.text, "the warning names the damaged file"
    assert "reused_from" not in again, "the job ran again"
    assert read(tmp_path / "job" / "results.json")["status"] == "ok"
    assert again["job_key"] == first["job_key"]


def test_full_disk_for_results_is_an_error_not_ok(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(*QUICK)
    monkeypatch.setattr(benchmarks.cache.os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"results NOT saved.*free disk space"):
        run_job(cfg, tmp_path / "job")
    assert not (tmp_path / "job" / "results.json").exists()
    assert not index_of(cfg, tmp_path / "cache").exists(), "an unsaved job is not finished"


def test_full_disk_for_wandb_is_recorded(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wandb.Run, "finish", full_disk)
    results = run_job(make_cfg(*QUICK, "tracking=wandb_offline"), tmp_path / "job")
    saved = read(tmp_path / "job" / "results.json")
    assert saved["mark"] == "new", "tracking never costs the results"
    assert "No space left on device" in saved["tracking_error"]
    assert results["tracking_error"] == saved["tracking_error"]


def test_cut_wandb_run_file_is_recorded(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B writes its run file in another process: a full disk there raises nothing here."""
    finish = wandb.Run.finish

    def cut(run: wandb.Run, *args: Any, **kwargs: Any) -> None:
        finish(run, *args, **kwargs)
        run_file = Path(run.settings.sync_file)
        run_file.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 2])

    monkeypatch.setattr(wandb.Run, "finish", cut)
    run_job(make_cfg(*QUICK, "tracking=wandb_offline"), tmp_path / "job")
    saved = read(tmp_path / "job" / "results.json")
    assert saved["status"] == "ok" and saved["mark"] == "new"
    assert "run-" in saved["tracking_error"] and ".wandb" in saved["tracking_error"]


def test_an_intact_wandb_run_records_no_tracking_error(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None
) -> None:
    run_job(make_cfg(*QUICK, "tracking=wandb_offline"), tmp_path / "job")
    assert "tracking_error" not in read(tmp_path / "job" / "results.json")
    (run_dir,) = (tmp_path / "job" / "wandb").glob("offline-run-*")
    assert read_offline_run(run_dir)["summary"]["status"] == "ok"


def test_concurrent_same_key_jobs_both_record(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(*QUICK, "force=true")
    together = threading.Barrier(2)

    def racing(*args: Any, **options: Any) -> dict[str, Any]:
        together.wait(timeout=30)  # both record at the same moment
        return fake_run(*args)

    monkeypatch.setattr(benchmarks.job, "_run", racing)
    errors: list[BaseException] = []

    def job(name: str) -> None:
        try:
            run_job(cfg, tmp_path / name)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=job, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    saved = [read(tmp_path / name / "results.json") for name in ("a", "b")]
    assert [s["status"] for s in saved] == ["ok", "ok"]
    assert saved[0]["job_key"] == saved[1]["job_key"]
    pointed = read(Path(read(index_of(cfg, tmp_path / "cache"))["results"]))
    assert pointed["job_key"] == saved[0]["job_key"] and pointed["status"] == "ok"


def test_another_jobs_results_appearing_mid_run_are_kept(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs in one fixed dir, the other one finishing first: neither overwrites the other."""
    other = {"status": "ok", "method": "npo", "seed": 0, "job_key": "another-job"}

    def overtaken(cfg: DictConfig, output_dir: Path, *args: Any, **options: Any) -> dict[str, Any]:
        (output_dir / "results.json").write_text(json.dumps(other))
        return fake_run(cfg, output_dir, *args)

    monkeypatch.setattr(benchmarks.job, "_run", overtaken)
    results = run_job(make_cfg(*QUICK), tmp_path / "job")
    assert read(tmp_path / "job" / "results.json") == other
    assert read(tmp_path / "job" / f"results-{results['job_key']}.json")["mark"] == "new"


def test_jobs_sharing_a_dir_never_swap_results(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    isolated_cache: Path,
) -> None:
    """The user's probe: grad_ascent and npo in one run dir, then grad_ascent elsewhere must not
    be skipped as finished with npo's results."""
    shared = tmp_path / "shared"
    cfg = make_cfg(*QUICK, "eval.suite=[]")
    first = run_job(cfg, shared)
    with pytest.raises(OutputDirTaken, match=r"another job.*pick another hydra\.run\.dir"):
        run_job(make_cfg(*QUICK, "eval.suite=[]", "method=npo"), shared)
    assert read(shared / "results.json")["method"] == "grad_ascent"

    # The old damage: the finished-job index points at a file that now holds another job's.
    npo = {**read(shared / "results.json"), "method": "npo", "job_key": "npo-job"}
    (shared / "results.json").write_text(json.dumps(npo))
    with caplog.at_level(logging.WARNING):
        again = run_job(cfg, tmp_path / "elsewhere")
    assert "another job's results" in caplog.text
    assert "reused_from" not in again, "it ran again instead of copying npo's results"
    assert read(tmp_path / "elsewhere" / "results.json")["method"] == "grad_ascent"
    assert again["job_key"] == first["job_key"]
    indexed = Path(read(index_of(cfg, isolated_cache))["results"])
    assert indexed.samefile(tmp_path / "elsewhere" / "results.json")
