"""Datasets as canonical QA records; ``load_data(cfg.data)`` picks the loader by ``cfg.data.name``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.data.records import RECORD_SPLITS, DataError, QARecord, UnlearningData
from benchmarks.registry import Registry

Loader = Callable[[Any], UnlearningData]
DATASETS: Registry[Loader] = Registry("dataset")


def load_data(data_cfg: Any) -> UnlearningData:
    """Load the dataset named in ``data_cfg.name`` with the rest of ``data_cfg`` as options."""
    return DATASETS.get(data_cfg.name)(data_cfg)


# Importing the loader modules registers them.
from benchmarks.data import hub, qa_file, wpu_mini  # noqa: E402

__all__ = ["DATASETS", "RECORD_SPLITS", "DataError", "QARecord", "UnlearningData", "load_data"]
__all__ += ["hub", "qa_file", "wpu_mini"]
