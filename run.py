"""Entry point: ``python run.py [overrides]`` runs one job; ``python run.py -m ...`` a sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmarks.components import discover
from benchmarks.config import ConfigError, refuse_secret_overrides
from benchmarks.distributed import is_main_process
from benchmarks.evaluation.selection import WORST
from benchmarks.job import run_job
from benchmarks.report import print_summary

log = logging.getLogger(__name__)

discover()  # registers the methods and their config schemas before Hydra composes


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one job; return its selection objective (``results["selection"]``, what Hydra's Optuna
    sweeper maximises under ``tune=<method>``), or ``WORST`` (−inf) for a job that failed."""
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    group = Path(hydra_cfg.sweep.dir).as_posix().replace("/", "_") if sweep else None
    # An experiment (experiment=paper_wpu) prints the GPU estimate; other jobs do on a GPU.
    estimate = True if hydra_cfg.runtime.choices.get("experiment") else None
    try:
        results = run_job(
            cfg,
            Path(hydra_cfg.runtime.output_dir),
            group=group,
            raise_errors=not sweep,
            estimate=estimate,
        )
    except Exception:
        if "optuna" not in str(hydra_cfg.sweeper.get("_target_")):
            raise
        # A trial that fails before it records anything is the worst trial, not the end of the
        # tune (the Optuna sweeper aborts on a raised job).
        log.exception("Trial failed; it scores %s", WORST)
        return WORST
    if not is_main_process():
        return WORST  # the main process of a distributed launch reports the job
    print_summary(results)
    if results.get("tracking_error"):
        print(f"\nW&B TRACKING FAILED — {results['tracking_error']} (results.json is complete)")
    value = results.get("selection", {}).get("objective") if results["status"] == "ok" else None
    return WORST if value is None else float(value)


if __name__ == "__main__":
    try:
        refuse_secret_overrides(sys.argv[1:])
    except ConfigError as err:
        sys.exit(f"Error: {err}")
    main()
