"""Datasets as canonical QA records; ``load_data(cfg.data)`` picks the loader by ``cfg.data.name``."""

from __future__ import annotations

from typing import Any

# importing a loader module registers it
from benchmarks.data import hub, qa_file, wpu_mini, wpu_real
from benchmarks.data.loaders import DATASETS
from benchmarks.data.records import RECORD_ROLES, DataError, QARecord, UnlearningData


def load_data(data_cfg: Any) -> UnlearningData:
    """Load the dataset named in ``data_cfg.name`` with the rest of ``data_cfg`` as options."""
    return DATASETS.get(data_cfg.name)(data_cfg)


__all__ = ["DATASETS", "RECORD_ROLES", "DataError", "QARecord", "UnlearningData", "load_data"]
__all__ += ["hub", "qa_file", "wpu_mini", "wpu_real"]
