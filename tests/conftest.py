"""Shared fixtures: composed configs for a tiny random model, an isolated cache per session, and
the ``external`` marker's skip where the real data beside the repository is absent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from benchmarks.components import discover
from benchmarks.models import cache_dir, load_model

discover()  # the config schemas, as run.py registers them

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Real data written by others, beside the repository where present (CI); a plain clone lacks it.
EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"

#: Overrides that make a whole job take seconds: tiny model, one epoch, few questions, no W&B.
#: The knowledge gate is off: a tiny random model learns no fact (tests/test_gate.py gates it).
TINY = [
    "model=tiny_random",
    "tracking=none",
    "target.train.epochs=1",
    "target.gate.enabled=false",
    "method.epochs=1",
    "data.n_retain=4",
    "data.n_general_retain=4",
    "eval.leak.use_embedding=false",
    "eval.max_new_tokens=8",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``external`` skip, with the reason, where ``../shared/external`` is absent."""
    if EXTERNAL.is_dir():
        return
    skip = pytest.mark.skip(
        reason="../shared/external not found: the external real-data tests run where it is "
        "present, e.g. in CI"
    )
    for item in items:
        if item.get_closest_marker("external"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session caches models and targets in its own directory."""
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("UNSTAR_BENCH_CACHE", str(path))
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    yield path
    mp.undo()


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tiny models gain nothing from threads and lose 20-100x to contention on a busy machine;
    slow tests run the real model and keep torch's default threads."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fluent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that knows some English and none of the data's facts (tests/fluent.py), saved
    like a hub model: ``model=hub model.name_or_path=DIR``. Trained once per session (seconds)."""
    from fluent import fluent_tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fluent_tiny(tmp_path_factory.mktemp("fluent"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def make_cfg() -> Callable[..., DictConfig]:
    """Compose ``conf/config.yaml`` with overrides, as ``python run.py`` would."""

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*(TINY if tiny else []), *overrides])

    return make


def scaled_tiny_model(cfg: DictConfig) -> tuple:
    """The tiny model with its layer weights scaled up, and its tokenizer. Freshly initialised with
    tied embeddings, it just repeats its last input token, so every comparison of two ways to compute
    its output would pass vacuously; scaled, its output depends on the whole context and a padding
    or position mistake changes it."""
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    with torch.no_grad():
        for weight in model.model.layers.parameters():
            if weight.dim() == 2:
                weight.mul_(20)
    return model, tokenizer
