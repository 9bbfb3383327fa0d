"""The dataset registry: each loader module registers itself with ``@DATASETS.register(name)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.data.records import UnlearningData
from benchmarks.registry import Registry

Loader = Callable[[Any], UnlearningData]
DATASETS: Registry[Loader] = Registry("dataset")
