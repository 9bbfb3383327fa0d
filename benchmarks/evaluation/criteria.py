"""The five WPU criteria of the UnSTAR paper from one model's rows.

Their definition (each criterion's sub-metrics, the harmonic mean) is the metric spec registry's,
:mod:`benchmarks.evaluation.specs`; here the sub-metrics are read off the rows. Values are raw, in
[0, 1], higher better. The paper presents them divided by the best method of a comparison; that
belongs to the analysis of a sweep (``analysis.collect``) and needs only these raw values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.evaluation.specs import CRITERIA, criteria, criteria_submetrics, harmonic_mean

__all__ = ["CRITERIA", "criteria", "harmonic_mean", "submetrics", "view_mean"]

Rows = Sequence[Mapping[str, Any]]


def view_mean(rows: Rows, view: str, key: str) -> float | None:
    """Mean of ``key`` over a view's rows; None unless every row of the view has it."""
    chosen = [row for row in rows if row["view"] == view]
    if not chosen or any(row.get(key) is None for row in chosen):
        return None
    return float(np.mean([float(row[key]) for row in chosen]))


def submetrics(
    rows: Rows, attacks: Iterable[str]
) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    """Each criterion's named sub-metrics from one model's judged rows (attack rows included),
    over the views the rows have; and a note per criterion that dropped an absent view."""
    views = {row["view"] for row in rows}
    return criteria_submetrics(lambda view, key: view_mean(rows, view, key), views, attacks)
