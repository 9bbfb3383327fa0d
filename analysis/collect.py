"""A sweep → one DataFrame of jobs → comparison tables and plots.

``python -m analysis.collect SWEEP_DIR [--out DIR] [--log-wandb]`` reads every job of a Hydra
sweep directory: its ``results.json``, or, for a job that never wrote one, its ``.hydra`` record;
jobs that ``multirun.yaml`` promised but that never got a directory are listed too.
``--wandb DIR`` reads the W&B runs under DIR instead (offline run directories, read locally with
:func:`benchmarks.tracking.read_offline_run`); ``--wandb ENTITY/PROJECT [--group G]`` reads a
project through ``wandb.Api`` (needs a server and a key, so no test covers that path). A job with
several W&B runs (a killed sweep re-run) counts once: its latest finished run, else its latest.

It writes, under ``--out`` (default ``SWEEP_DIR/analysis``):

- ``jobs.csv``: one row per job: method, variant, overrides, seed, status, error, every raw metric
  (``unlearned/forget/leak_rate``), the five criteria (``criteria/...``), timings (``time/...``);
- ``problems.csv``: failed and missing jobs, also printed: a sweep is never silently thinned;
- ``summary.{csv,md,tex}``: mean ± std (sample std, ddof=1) over seeds per method and variant;
- ``relative_to_best.{csv,md,tex}``: the paper's view: each criterion as % of the best method's mean,
  and worst-case robustness (WR: 1 − the worst-case forget leak over all attacks) the same way;
- ``robustness.{csv,md,tex}`` (when the jobs ran attacks): the unlearned model's forget leak under
  greedy decoding and each attack, the worst case, multiple-choice accuracy, echo rate and the
  refusal and fabrication shares of forget answers;
- ``criteria_bars.png``, ``criteria_radar.png``, ``efficacy_vs_utility.png``;
- ``comparison.{csv,md}``, ``setup.csv``, ``pareto.png`` (:mod:`analysis.compare`): per method the
  mean and 95% bootstrap interval (questions resampled, the same draw for every seed and method)
  of each headline metric, ties with the best, tuned parameters, budget, stopping and costs.

Rows are grouped by method and *variant*: the config keys that differ between jobs of the same
method, seed excepted, so ``method.rationale=true,false`` gives two rows and a seed sweep one.
``--log-wandb`` logs the tables and plots to a summary W&B run in the sweep's group.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.compare import write_comparison
from analysis.plots import write_plots
from analysis.runs import Collection, read_sweep, read_wandb
from analysis.tables import (
    Report,
    relative_to_best,
    relative_to_best_table,
    robustness_columns,
    robustness_table,
    summarise,
    summary_table,
    to_markdown,
    write_tables,
)
from analysis.wandb_summary import log_summary_run


def write(collection: Collection, out: Path | str) -> Report:
    """Write every table and plot of a collection under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"jobs": out / "jobs.csv", "problems": out / "problems.csv"}
    collection.jobs.to_csv(files["jobs"], index=False)
    collection.problems.to_csv(files["problems"], index=False)
    summary = summarise(collection.jobs)
    if summary.empty:
        return Report(summary, pd.DataFrame(), files)
    relative = relative_to_best(summary)
    files.update(write_tables(summary, relative, out))
    files.update(write_plots(collection.jobs, summary, relative, out))
    files.update(write_comparison(collection.jobs, out)[1])
    return Report(summary, relative, files)


def describe(collection: Collection, report: Report) -> str:
    """The printout: counts, every problem, and both tables."""
    counts = collection.jobs["status"].value_counts()
    lines = [
        f"{len(collection.jobs)} jobs from {collection.source}: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
    ]
    if len(collection.problems):
        lines.append(f"\nProblems ({len(collection.problems)}, also in problems.csv):")
        lines += [f"  {p.status:<8} {p.job}: {p.error}" for p in collection.problems.itertuples()]
    if report.summary.empty:
        lines.append("\nNo finished jobs: nothing to compare.")
        return "\n".join(lines)
    lines.append("\nPer method, mean ± std over seeds (raw criteria, higher is better):")
    lines.append(to_markdown(summary_table(report.summary)))
    lines.append("\nRelative to the best method (100 = best), the paper's view:")
    lines.append(to_markdown(relative_to_best_table(report.relative_to_best, report.summary)))
    if robustness_columns(report.summary):
        lines.append("\nForget leak under each attack (unlearned model), and the probes:")
        lines.append(to_markdown(robustness_table(report.summary)))
    if "comparison.md" in report.files:
        lines.append(
            "\nThe comparison (per method; tuning, budget, stopping, unlearning costs below):"
        )
        lines.append(report.files["comparison.md"].read_text("utf-8").rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.collect", description=__doc__)
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="a Hydra sweep directory")
    parser.add_argument("--wandb", help="read W&B runs: a local dir of runs, or entity/project")
    parser.add_argument("--group", help="with --wandb: only this W&B group (a sweep)")
    parser.add_argument("--out", type=Path, help="default: SWEEP_DIR/analysis")
    parser.add_argument("--log-wandb", action="store_true", help="log a summary W&B run")
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.wandb is None):
        parser.error("give a SWEEP_DIR or --wandb, not both")
    if args.wandb:
        local = Path(args.wandb)
        out = args.out or (local / "analysis" if local.exists() else Path("outputs/analysis"))
        collection = read_wandb(args.wandb, args.group)
    else:
        out = args.out or args.sweep_dir / "analysis"
        collection = read_sweep(args.sweep_dir, skip=out)
    report = write(collection, out)
    print(describe(collection, report))
    print(
        f"\nWrote {len(report.files)} files to {out}: {', '.join(p.name for p in report.files.values())}"
    )
    if args.log_wandb:
        print(f"Summary W&B run: {log_summary_run(collection, report, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
