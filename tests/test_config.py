"""Every option of every config group composes, and bad choices fail early with a message that
says what to do: a typo in a sweep should cost seconds, not a cluster allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FIXTURES
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from benchmarks.data import DATASETS
from benchmarks.evaluation.evaluate import EVAL_SPLITS, METRICS
from benchmarks.job import run_job
from benchmarks.methods import METHODS, load_method_modules
from benchmarks.models import ModelError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {"model", "data", "target", "method", "eval", "tracking"}
#: Keys each group's options must define, by group.
EXPECTED = {
    "model": {"source", "name_or_path", "dtype"},
    "data": {"name", "only_known"},
    "target": {"kind"},
    "method": {"name"},
    "eval": {"splits", "metrics", "max_new_tokens", "batch_size", "leak"},
    "tracking": {"wandb"},
    "hydra/launcher": {"_target_"},
}
#: Values an option leaves to the user (``???``), filled as a user would.
REQUIRED = {
    "model=hub": ["model.name_or_path=/models/any-causal-lm"],
    "data=qa_file": [f"data.path={FIXTURES / 'qa_is_correct.csv'}"],
}


def options() -> list[tuple[str, str]]:
    """(group, option) for every yaml under conf/<group>/, nested groups (hydra/launcher) too."""
    found = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and not path.stem.startswith("_"):
            found.append((group, path.stem))
    return found


def in_primary_defaults(group: str) -> bool:
    """Whether ``group=option`` needs no ``+``: the group is in config.yaml's (or Hydra's) defaults."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").defaults
    return group.startswith("hydra/") or any(
        isinstance(entry, DictConfig) and group in entry for entry in defaults
    )


@pytest.mark.parametrize(
    ("group", "option"), [pytest.param(g, o, id=f"{g}={o}") for g, o in options()]
)
def test_every_option_composes(group: str, option: str) -> None:
    choice = f"{group}={option}"
    override = choice if in_primary_defaults(group) else f"+{choice}"
    launcher = group.startswith("hydra/")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = [override, *REQUIRED.get(choice, [])]
        cfg = compose("config", overrides=overrides, return_hydra_config=launcher)

    node = OmegaConf.select(cfg, group.replace("/", "."))
    missing = EXPECTED.get(group, set()) - set(node or {})  # a _global_ package has no node
    assert not missing, f"{choice} lacks {sorted(missing)}"
    if launcher:
        return  # the rest of a launcher's config resolves only inside a Hydra run
    assert set(cfg) >= GROUPS, f"{choice} dropped a group"
    assert not OmegaConf.missing_keys(cfg), f"{choice} leaves ??? values: add them to REQUIRED"
    OmegaConf.to_container(cfg, resolve=True)
    load_method_modules()
    assert cfg.method.name in METHODS, f"method.name={cfg.method.name!r} is not registered"
    assert cfg.data.name in DATASETS, f"data.name={cfg.data.name!r} is not registered"
    assert set(cfg.eval.splits) <= set(EVAL_SPLITS)
    assert set(cfg.eval.metrics) <= set(METRICS)
    assert cfg.target.kind in {"base", "finetune"}
    assert cfg.tracking.wandb.mode in {"offline", "online", "disabled"}


def test_options_are_found() -> None:
    found = set(options())
    assert {("model", "tiny_random"), ("method", "grad_ascent"), ("tracking", "none")} <= found
    assert ("method", "_train_defaults") not in found


@pytest.mark.parametrize("override", ["method=_train_defaults", "method.name=no_such_method"])
def test_unknown_method_names_the_registered_ones(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, override: str
) -> None:
    load_method_modules()
    with pytest.raises(KeyError) as caught:
        run_job(make_cfg(override), tmp_path / "job")
    assert all(name in str(caught.value) for name in METHODS.names())


def test_unknown_method_option_fails_at_composition(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(MissingConfigException, match=r"(?s)'method/no_such_method'.*grad_ascent"):
        make_cfg("method=no_such_method")


def test_bad_model_source_is_a_model_error(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="tiny_random"):
        run_job(make_cfg("model.source=nowhere"), tmp_path / "job")


def test_missing_local_model_says_what_to_do(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-model"
    cfg = make_cfg("model=hub", f"model.name_or_path={missing}", "force=true")
    with pytest.raises(ModelError) as caught:
        run_job(cfg, tmp_path / "job")
    message = str(caught.value)
    assert str(missing) in message
    assert "model.name_or_path=DIR" in message
