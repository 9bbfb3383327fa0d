"""W&B offline tracking and secret hygiene: a sweep's runs must be readable without a server,
grouped by sweep, and no credential may reach any file a job writes (they get shared and synced).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, open_dict

from benchmarks.config import ConfigError
from benchmarks.job import run_job
from benchmarks.tracking import TrackingError, read_offline_run, redact

#: Seconds, not minutes: gradient ascent, two optimiser steps each, one loss logged per step;
#: force: every job really runs (not skipped as a repeat of an earlier test's job).
QUICK = (
    "tracking=wandb_offline",
    "method=grad_ascent",
    "method.max_steps=2",
    "method.logging_steps=1",
    "target.train.max_steps=2",
    "force=true",
)
#: The evaluation suite adds nothing to what these tests track but time; the secret test keeps
#: it, since the judge's settings are where a key would most likely be configured.
NO_SUITE = "eval.suite=[]"
SECRET = "SECRET123"


def offline_run(job_dir: Path) -> dict[str, Any]:
    """The one offline W&B run a job left under its output dir, read back locally."""
    runs = list((job_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run under {job_dir}, found {runs}"
    return read_offline_run(runs[0])


def test_offline_run_has_group_config_summary_and_history(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = run_job(make_cfg(*QUICK, NO_SUITE), tmp_path / "job", group="sweep-x")
    assert results["status"] == "ok"
    run = offline_run(tmp_path / "job")

    assert run["group"] == "sweep-x"
    assert run["config"]["method"]["name"] == "grad_ascent"
    assert run["summary"]["status"] == "ok"
    assert run["summary"]["job_key"] == results["job_key"], "a W&B run names the job it records"
    leak = results["metrics"]["target"]["forget"]["leak_rate"]
    assert run["summary"]["target/forget/leak_rate"] == pytest.approx(leak)
    live = [row for row in run["history"] if "unlearn/forget_loss" in row]
    assert len(live) >= 2, "each unlearning step's loss should be logged as it happens"


def test_jobs_of_one_sweep_share_its_group(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    for seed in (0, 1):
        run_job(make_cfg(*QUICK, NO_SUITE, f"seed={seed}"), tmp_path / f"s{seed}", group="sweep-x")
    runs = [offline_run(tmp_path / f"s{seed}") for seed in (0, 1)]
    assert [run["group"] for run in runs] == ["sweep-x", "sweep-x"]
    assert [run["name"] for run in runs] == ["grad_ascent-s0", "grad_ascent-s1"]
    assert runs[0]["id"] != runs[1]["id"]


def test_redact_masks_credentials_only() -> None:
    config = {
        "api_key": "k",
        "judge": {"OPENAI_API_KEY": "k", "hf_token": "t", "Password": "p", "url": "http://x"},
        "items": [{"client_secret": "s", "lr": 0.1}],
        "eval": {"max_new_tokens": 32, "tokenizer": "byte"},
        "token": None,
    }
    assert redact(config) == {
        "api_key": "***",
        "judge": {"OPENAI_API_KEY": "***", "hf_token": "***", "Password": "***", "url": "http://x"},
        "items": [{"client_secret": "***", "lr": 0.1}],
        "eval": {"max_new_tokens": 32, "tokenizer": "byte"},
        "token": None,
    }


def test_secrets_never_reach_a_file(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_cache: Path,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-test-{SECRET}")
    cfg = make_cfg(*QUICK)
    with open_dict(cfg):
        cfg.api_key = f"sk-test-{SECRET}"
        cfg.tracking.hf_token = f"hf-{SECRET}"  # an untyped section: only validation stops it
    with pytest.raises(ConfigError, match="configs never hold credentials"):
        run_job(cfg, tmp_path / "job", group="sweep-x")  # refused, and recorded without the value

    assert json.loads((tmp_path / "job" / "results.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "job" / "results.json").read_text())["config"]["api_key"] == "***"
    files = [
        p for root in (tmp_path / "job", isolated_cache) for p in root.rglob("*") if p.is_file()
    ]
    assert not any(p.suffix == ".wandb" for p in files), "validation runs before W&B starts"
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked, f"secret written to {leaked}"


@pytest.mark.parametrize("failure", ["no API key", "unwritable offline dir"])
def test_tracking_that_cannot_start_is_recorded(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    job_dir = tmp_path / "job"
    if failure == "no API key":
        for name in ("WANDB_API_KEY", "WANDB_MODE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
        cfg, fix = make_cfg(*QUICK, "tracking=wandb_online"), "set WANDB_API_KEY"
    else:
        job_dir.mkdir()
        (job_dir / "wandb").write_text("a file where W&B wants its dir")
        cfg, fix = make_cfg(*QUICK), "is writable"

    with pytest.raises(TrackingError, match=fix):
        run_job(cfg, job_dir)
    recorded = json.loads((job_dir / "results.json").read_text())
    assert recorded["status"] == "failed"
    assert fix in recorded["error"] and "TrackingError" in recorded["error"]
