"""The ``--log-wandb`` summary run: a sweep's comparison tables and plots, logged to its W&B group."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from analysis.plots import PLOTS
from analysis.runs import Collection
from analysis.tables import Report, robustness_columns, shown


def log_summary_run(collection: Collection, report: Report, out: Path) -> Path:
    """Log the comparison tables (``wandb.Table``) and plots to a summary run in the sweep's
    group, offline unless the sweep ran online; returns the run's local directory."""
    import wandb

    def table(frame: pd.DataFrame) -> wandb.Table:
        frame = frame.reset_index().astype(object)
        return wandb.Table(dataframe=frame.where(frame.notna(), None))

    run = wandb.init(
        project=collection.project,
        group=collection.group,
        name="summary",
        job_type="summary",
        dir=str(out),
        mode=os.environ.get("WANDB_MODE", collection.mode),
        config={
            "summary_of": collection.source,
            "jobs": len(collection.jobs),
            "problems": len(collection.problems),
        },
        reinit="finish_previous",
    )
    stats = [f"{stem} {stat}" for stem in shown(report.summary) for stat in ("mean", "std")]
    comparison = report.summary[["method", "variant", "n", "seeds", *stats]]
    logged = {"comparison": table(comparison), "relative_to_best": table(report.relative_to_best)}
    logged["problems"] = table(collection.problems.set_index("job"))
    robustness = [
        f"{c} {stat}" for c in robustness_columns(report.summary) for stat in ("mean", "std")
    ]
    if robustness:
        logged["robustness"] = table(report.summary[["method", "variant", "n", *robustness]])
    logged.update({n: wandb.Image(str(report.files[n])) for n in PLOTS if n in report.files})
    run.log(logged)
    run.finish()
    wandb.teardown()  # finish() can return before W&B's writer has flushed the run file
    return Path(run.dir).parent
