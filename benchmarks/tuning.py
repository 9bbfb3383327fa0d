"""Tuning on Hydra's Optuna sweeper, and running a method at what a tune found.

``python run.py -m tune=npo`` composes ``tune/npo``: ``conf/tune/common.yaml`` (the Optuna
sweeper, the one trial budget every method gets, the cheap ``eval=tune``, the stopping rule) plus
the method and its declared ``search_space`` (:func:`register_tune_configs`). Each trial is one job
whose return value is its selection objective (:mod:`benchmarks.evaluation.selection`). At the
end, :class:`WriteTuned` writes ``<tuned_dir>/<method>.yaml``: the best parameters, their
objective, the budget, every trial, and the protocol they were tuned under. A job with
``use_tuned=true`` (``experiment=compare``) runs its method at those parameters
(:func:`apply_tuned`) and records which it used in ``results["tuning"]``.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmarks.cache import atomic_write_text
from benchmarks.config import ConfigError

log = logging.getLogger(__name__)

#: The parts of a job's config that tuned parameters are only valid for: the model, the data, the
#: target it unlearns from, and the stopping rule (a comparison runs all methods with it on, or
#: all off). The evaluation is not among them: trials use the cheap ``eval=tune``.
PROTOCOL = ("model", "data", "target", "method.stop_when_forgotten", "method.stop_check_every")


def register_tune_configs(spaces: dict[str, dict[str, str]]) -> None:
    """``tune=<method>`` for every method with a search space: ``tune/common`` (conf/tune/) with
    the method selected and its space as the sweeper's params."""
    store = ConfigStore.instance()
    for name, space in spaces.items():
        if space:
            node = {
                "defaults": ["common", {"override /method": name}, "_self_"],
                "hydra": {"sweeper": {"params": dict(space)}},
            }
            store.store(group="tune", name=name, node=node, package="_global_")


def protocol(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`PROTOCOL` keys of a resolved config."""
    out = {}
    for key in PROTOCOL:
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


def tuned_path(tuned_dir: str | Path, method: str) -> Path:
    return Path(tuned_dir) / f"{method}.yaml"


# -- writing what a tune found ---------------------------------------------------------------


class WriteTuned(Callback):
    """At the end of a ``tune=<method>`` sweep, write ``<tuned_dir>/<method>.yaml`` and the sweep's
    ``trials.json``; Optuna's own ``optimization_results.yaml`` stays beside them."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        trials = read_trials(sweep_dir, set(config.hydra.sweeper.params))
        atomic_write_text(sweep_dir / "trials.json", json.dumps(trials, indent=1))
        finished = [t for t in trials if t["objective"] is not None]
        if not finished:
            log.error("No trial of %s finished: nothing tuned (see %s)", sweep_dir, sweep_dir)
            return
        best = max(finished, key=lambda t: t["objective"])
        method = OmegaConf.select(config, "method.name")
        record = {
            "method": method,
            "best_params": best["params"],
            "objective": best["objective"],
            "best_trial": best["number"],
            "n_trials": int(config.hydra.sweeper.n_trials),
            "finished_trials": len(finished),
            "sampler": OmegaConf.to_container(config.hydra.sweeper.sampler, resolve=True),
            "search_space": OmegaConf.to_container(config.hydra.sweeper.params, resolve=True),
            "objective_definition": "benchmarks.evaluation.selection.objective (README: Tuning)",
            "protocol": best["protocol"],
            "sweep_dir": str(sweep_dir.resolve()),
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "trials": trials,
        }
        path = tuned_path(config.tuned_dir, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(record)))
        log.info(
            "Tuned %s: objective %.4f at %s → %s", method, best["objective"], best["params"], path
        )


def read_trials(sweep_dir: Path, searched: set[str]) -> list[dict[str, Any]]:
    """Every trial of a sweep in job order: its number, parameters (its overrides of the
    ``searched`` keys), objective (None for a trial that failed or never finished) and its job's
    protocol."""
    trials = []
    dirs = sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()),
        key=lambda d: int(d.name),
    )
    for job in dirs:
        overrides = job / ".hydra" / "overrides.yaml"
        given = [str(o) for o in OmegaConf.load(overrides)] if overrides.exists() else []
        params = {
            o.get_key_element(): o.value()
            for o in OverridesParser.create().parse_overrides(given)
            if o.get_key_element() in searched
        }
        results_path = job / "results.json"
        results = json.loads(results_path.read_text("utf-8")) if results_path.exists() else {}
        value = (
            results.get("selection", {}).get("objective") if results.get("status") == "ok" else None
        )
        finite = value is not None and math.isfinite(value)
        trials.append(
            {
                "number": int(job.name),
                "params": params,
                "objective": float(value) if finite else None,
                "status": results.get("status", "missing"),
                "error": results.get("error"),
                "selection": results.get("selection"),
                "protocol": protocol(results.get("config", {})),
            }
        )
    return trials


# -- running at what a tune found ------------------------------------------------------------


def apply_tuned(cfg: DictConfig) -> dict[str, Any]:
    """With ``use_tuned=true``, set the method's tuned parameters in ``cfg`` (they replace the
    config's values); returns what ``results["tuning"]`` records. A method with no tuned file runs
    at its defaults, recorded as ``untuned``; a file tuned under another protocol is an error."""
    method = cfg.method.name
    if not cfg.get("use_tuned"):
        return {"status": "untuned", "why": "use_tuned=false"}
    path = tuned_path(cfg.tuned_dir, method)
    if not path.exists():
        log.warning("No %s: %s runs at its defaults (untuned)", path, method)
        return {"status": "untuned", "why": f"no {path}"}
    tuned = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    mine = protocol(OmegaConf.to_container(cfg, resolve=True))
    theirs = tuned.get("protocol", {})
    differs = sorted(k for k in PROTOCOL if theirs.get(k) != mine[k])
    if differs:
        raise ConfigError(
            f"{path} was tuned with other {differs} than this job's; tune {method} again "
            f"(python run.py -m tune={method} with this job's model/data/target/stopping "
            "overrides) or point tuned_dir elsewhere"
        )
    foreign = sorted(k for k in tuned["best_params"] if not k.startswith("method."))
    if foreign:
        raise ConfigError(
            f"{path} sets {foreign}: tuned parameters are method.* keys only; tune {method} again"
        )
    with open_dict(cfg):
        for key, value in tuned["best_params"].items():
            OmegaConf.update(cfg, key, value, merge=False)
    return {
        "status": "tuned",
        "params": tuned["best_params"],
        "objective": tuned["objective"],
        "n_trials": tuned["n_trials"],
        "finished_trials": tuned.get("finished_trials"),
        "source": str(path.resolve()),
    }
