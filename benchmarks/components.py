"""Discovery at the entry point: import every module of the method packages, so their decorators
register them, type each ``method`` option with its method's config schema, and offer
``tune=<method>`` for each method that declares a search space.

A new method is one module in ``baselines/`` (or ``unstar/``) plus its YAML file; nothing here
lists them. Importing this module is what ``run.py`` and the tests do before composing a config.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from benchmarks.config import register_schemas
from benchmarks.methods import METHODS
from benchmarks.tuning import register_tune_configs

METHOD_PACKAGES = ("baselines", "unstar")


@functools.cache
def discover() -> None:
    """Register every method and store the config schemas in Hydra's ConfigStore (once)."""
    for package_name in METHOD_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{module.name}")
    register_schemas({name: METHODS.get(name).config_class for name in METHODS.names()})
    register_tune_configs({name: METHODS.get(name).search_space for name in METHODS.names()})
