"""Comparison plots of a sweep: criteria bars, a radar relative to the best, efficacy vs utility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.tables import COMPARED_SHORT_NAMES, compared, raw_values

#: The plots, by the name of their file (``<name>.png``).
PLOTS = ("criteria_bars", "criteria_radar", "efficacy_vs_utility")


def plot_bars(summary: pd.DataFrame) -> Figure:
    """One panel per criterion (and worst-case robustness, 1 − worst-case leak): each method's
    mean raw value, error bars one std over seeds."""
    names = compared(summary)
    fig = Figure(figsize=(3.2 * max(len(names), 1), 3.6), layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    positions = np.arange(len(summary))
    for ax, name in zip(axes, names, strict=False):
        mean, std = raw_values(summary, name)
        means, stds = mean.to_numpy(float), np.nan_to_num(std.to_numpy(float))
        colors = [f"C{i}" for i in range(len(summary))]
        ax.bar(positions, means, yerr=stds, color=colors, capsize=4)
        ax.set_title(name.replace("_", " "))
        ax.set_xticks(positions, summary.index, rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("raw value (higher is better)")
    return fig


def plot_radar(relative: pd.DataFrame, summary: pd.DataFrame) -> Figure | None:
    """The criteria per method relative to the best (100), worst-case robustness (WR) among them
    where the sweep ran attacks; None under three axes."""
    names = compared(summary)
    if len(names) < 3:
        return None
    angles = np.linspace(0, 2 * np.pi, len(names), endpoint=False)
    closed = np.append(angles, angles[0])
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot(projection="polar")
    for i, (label, row) in enumerate(relative.iterrows()):
        values = np.nan_to_num([row[f"{n} mean"] for n in names])
        ax.plot(closed, np.append(values, values[0]), color=f"C{i}", label=label)
        ax.fill(closed, np.append(values, values[0]), color=f"C{i}", alpha=0.12)
    ax.set_xticks(angles, [COMPARED_SHORT_NAMES[n] for n in names])
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize="small")
    return fig


def plot_scatter(jobs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Forget efficacy against model utility: each job a dot, each method's mean ± std a cross."""
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ok = jobs[jobs["status"] == "ok"]
    x, y = "criteria/model_utility", "criteria/unlearning_efficacy"
    for i, (label, row) in enumerate(summary.iterrows()):
        mine = ok[ok["label"] == label]
        ax.scatter(mine[x], mine[y], color=f"C{i}", alpha=0.4, s=18)
        ax.errorbar(
            row[f"{x} mean"],
            row[f"{y} mean"],
            xerr=np.nan_to_num(row[f"{x} std"]),
            yerr=np.nan_to_num(row[f"{y} std"]),
            color=f"C{i}",
            marker="o",
            capsize=4,
            label=label,
        )
    ax.set_xlabel("model utility")
    ax.set_ylabel("unlearning efficacy")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
    return fig


def write_plots(
    jobs: pd.DataFrame, summary: pd.DataFrame, relative: pd.DataFrame, out: Path
) -> dict[str, Path]:
    """Every plot that has something to show, as ``out/<name>.png``; returns the files by name."""
    figures = dict(
        zip(
            PLOTS,
            (plot_bars(summary), plot_radar(relative, summary), plot_scatter(jobs, summary)),
            strict=True,
        )
    )
    files = {}
    for name, fig in figures.items():
        if fig is not None:
            files[name] = out / f"{name}.png"
            fig.savefig(files[name], dpi=120)
    return files
