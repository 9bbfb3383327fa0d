"""Tuning on Hydra's Optuna sweeper: ``tune=<method>`` composes the method's declared search space
with the shared budget; a 2-trial tune of the tiny model writes best parameters that a comparison
job then runs at; a failed trial scores worst without ending the tune."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from test_sweeps import JOB, run_sweep

from benchmarks.config import ConfigError
from benchmarks.evaluation.selection import (
    OPTIONAL_RETAIN_SIDE,
    RETAIN_SIDE,
    probe_views,
    selected,
)
from benchmarks.job import run_job
from benchmarks.methods import METHODS
from benchmarks.tuning import WriteTuned

#: A 2-trial tune of grad_ascent on the tiny model, two optimizer steps a trial.
TUNE = ["tune=grad_ascent", "hydra.sweeper.n_trials=2", "tracking=none", *JOB]


def hydra_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).search_space])
def test_tune_sets_the_methods_search_space_and_the_shared_budget(name: str) -> None:
    cfg = hydra_cfg(f"tune={name}")
    assert cfg.method.name == name
    assert dict(cfg.hydra.sweeper.params) == METHODS.get(name).search_space
    assert cfg.hydra.sweeper.n_trials == hydra_cfg("tune=npo").hydra.sweeper.n_trials
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.sampler.seed == 0
    assert cfg.eval.suite == [] and cfg.method.stop_when_forgotten


def test_tuning_evaluates_exactly_what_the_objective_reads() -> None:
    views = hydra_cfg("tune=npo").eval.views
    retain = (*RETAIN_SIDE, *OPTIONAL_RETAIN_SIDE)
    assert list(views) == [*probe_views(), *(selected(v) for v in retain)]


def test_compare_runs_every_method_over_three_seeds_as_tuned() -> None:
    cfg = hydra_cfg("experiment=compare")
    params = cfg.hydra.sweeper.params
    assert sorted(params.method.split(",")) == sorted(METHODS.names())
    assert params.seed == "0,1,2" and cfg.use_tuned
    # The same stopping protocol as the tunes, so tuned parameters apply.
    tune = hydra_cfg("tune=npo").method
    assert (cfg.method.stop_when_forgotten, cfg.method.stop_check_every) == (
        tune.stop_when_forgotten,
        tune.stop_check_every,
    )


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> Path:
    """A 2-trial tune of grad_ascent; its tuned_dir."""
    root = tmp_path_factory.mktemp("tune")
    run_sweep(root / "sweep", isolated_cache, *TUNE, f"tuned_dir={root / 'tuned'}")
    return root


def test_a_two_trial_tune_writes_best_parameters_and_every_trial(tuned: Path) -> None:
    record = OmegaConf.to_container(OmegaConf.load(tuned / "tuned" / "grad_ascent.yaml"))
    assert record["n_trials"] == 2 and len(record["trials"]) == 2
    assert set(record["best_params"]) == {"method.lr", "method.epochs"}
    best = record["trials"][record["best_trial"]]
    assert best["params"] == record["best_params"] and best["objective"] == record["objective"]
    assert record["objective"] == max(t["objective"] for t in record["trials"])
    assert isinstance(record["best_params"]["method.epochs"], int)
    # Optuna's own record agrees.
    optuna = OmegaConf.load(tuned / "sweep" / "optimization_results.yaml")
    assert optuna.best_value == pytest.approx(record["objective"])
    trials = json.loads((tuned / "sweep" / "trials.json").read_text())
    assert [t["number"] for t in trials] == [0, 1]


def test_a_comparison_job_runs_at_the_tuned_parameters(
    tuned: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    record = OmegaConf.load(tuned / "tuned" / "grad_ascent.yaml")
    cfg = make_cfg(
        "method=grad_ascent", "method.max_steps=2", "method.stop_when_forgotten=true",
        "use_tuned=true", f"tuned_dir={tuned / 'tuned'}",
    )  # fmt: skip
    results = run_job(cfg, tmp_path)
    assert results["tuning"]["status"] == "tuned"
    assert results["tuning"]["params"] == OmegaConf.to_container(record.best_params)
    assert results["config"]["method"]["lr"] == record.best_params["method.lr"]
    assert results["config"]["method"]["epochs"] == record.best_params["method.epochs"]
    # Every job records its stopping, its costs per phase and its selection objective.
    assert results["method_metrics"]["stopping"]["steps"] == 2
    assert results["costs"]["unlearn"]["optimizer_steps"] == 2
    assert results["costs"]["total"]["generated_tokens"] > 0
    assert 0 <= results["selection"]["objective"] <= 1

    untuned = run_job(make_cfg("method=npo", "method.max_steps=1", "use_tuned=true",
                               f"tuned_dir={tuned / 'tuned'}"), tmp_path / "npo")  # fmt: skip
    assert untuned["tuning"]["status"] == "untuned" and "npo.yaml" in untuned["tuning"]["why"]


def test_parameters_tuned_under_another_protocol_are_refused(
    tuned: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg(
        "method=grad_ascent", "use_tuned=true", f"tuned_dir={tuned / 'tuned'}",
        "method.stop_when_forgotten=false",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"tuned with other \['method.stop_when_forgotten'\]"):
        run_job(cfg, tmp_path)


def test_a_failed_trial_scores_worst_and_the_tune_goes_on(
    tmp_path: Path, isolated_cache: Path
) -> None:
    run_sweep(tmp_path / "sweep", isolated_cache, *TUNE, "data.forget_set=nope",
              f"tuned_dir={tmp_path / 'tuned'}")  # fmt: skip
    trials = json.loads((tmp_path / "sweep" / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml").best_value == -math.inf
    assert not (tmp_path / "tuned").exists()  # nothing tuned


def fake_trial(sweep: Path, number: int, lr: str, objective: float | None) -> None:
    """A finished (or, without an objective, failed) trial's job directory."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- method.lr={lr}\n- method.epochs=2\n- seed=0\n"
    )
    status = "failed" if objective is None else "ok"
    results = {"status": status, "selection": {"objective": objective}, "config": {"seed": 0}}
    (job / "results.json").write_text(json.dumps(results))


def test_the_best_finished_trial_is_written(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for number, lr, objective in [
        (0, "1e-5", 0.2),
        (1, "3e-5", 0.7),
        (2, "1e-4", None),
        (3, "2e-6", 0.5),
    ]:
        fake_trial(sweep, number, lr, objective)
    config = OmegaConf.merge(
        hydra_cfg("tune=npo"),
        {"tuned_dir": str(tmp_path / "tuned"), "hydra": {"sweep": {"dir": str(sweep)}}},
    )
    WriteTuned().on_multirun_end(config)
    record = OmegaConf.load(tmp_path / "tuned" / "npo.yaml")
    assert record.best_params == {"method.lr": 3e-5, "method.epochs": 2}  # seed was not searched
    assert (record.objective, record.best_trial, record.finished_trials) == (0.7, 1, 3)
    assert [t.status for t in record.trials] == ["ok", "ok", "failed", "ok"]
    assert record.trials[2].objective is None
