"""Every option of every config group composes, and bad choices fail early with a message that
says what to do: a typo in a sweep should cost seconds, not a cluster allocation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf

from benchmarks.config import ConfigError, knob, refuse_secret_overrides, validate
from benchmarks.data import DATASETS
from benchmarks.evaluation.evaluate import EVAL_VIEWS, METRICS
from benchmarks.job import run_job
from benchmarks.methods import METHODS
from benchmarks.models import ModelError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {"model", "data", "target", "method", "eval", "tracking"}
#: Keys each group's options must define, by group.
EXPECTED = {
    "model": {"source", "name_or_path", "dtype"},
    "data": {"name", "only_known"},
    "target": {"kind"},
    "method": {"name"},
    "eval": {"views", "metrics", "max_new_tokens", "batch_size", "leak"},
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
    validate(cfg)
    assert cfg.method.name in METHODS, f"method.name={cfg.method.name!r} is not registered"
    assert cfg.data.name in DATASETS, f"data.name={cfg.data.name!r} is not registered"
    assert set(cfg.eval.views) <= set(EVAL_VIEWS)
    assert set(cfg.eval.metrics) <= set(METRICS)
    assert cfg.target.kind in {"base", "finetune"}
    assert cfg.tracking.wandb.mode in {"offline", "online", "disabled"}


def test_options_are_found() -> None:
    found = set(options())
    assert {("model", "tiny_random"), ("method", "grad_ascent"), ("tracking", "none")} <= found
    assert ("method", "_train_defaults") not in found


def test_unknown_method_names_the_registered_ones(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    with pytest.raises(KeyError) as caught:
        run_job(make_cfg("method.name=no_such_method"), tmp_path / "job")
    assert all(name in str(caught.value) for name in METHODS.names())


@pytest.mark.parametrize("option", ["no_such_method", "_train_defaults"])
def test_unknown_method_option_fails_at_composition(
    make_cfg: Callable[..., DictConfig], option: str
) -> None:
    with pytest.raises(MissingConfigException, match=rf"(?s)'method/{option}'.*grad_ascent"):
        make_cfg(f"method={option}")


#: Misuse found by a new user, and the key each error must name.
MISUSE = {
    "+method.lrr=1": "method.lrr is not a setting of UnSTARConfig; did you mean method.lr?",
    "method.epochs=0": "method.epochs=0 is out of range: it must be ≥ 1",
    "eval.batch_size=0": "eval.batch_size=0 is out of range: it must be ≥ 1",
    "method.lr=-0.1": "method.lr=-0.1 is out of range: it must be > 0",
    "target.train.max_steps=0": "target.train.max_steps=0 is out of range",
    "method.retain_loss=mse": "method.retain_loss='mse' is not allowed; choose one of",
    "+data.hf_token=x": "data.hf_token: configs never hold credentials",
    "+data.split=forget_1": "data.split is not a setting of WpuMiniConfig. Its settings:",
    "model.dtype=float8": "model.dtype='float8' is not allowed",
}


@pytest.mark.parametrize(("override", "message"), MISUSE.items(), ids=list(MISUSE))
def test_misuse_fails_before_any_model_work_and_is_recorded(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_job(make_cfg(override), tmp_path / "job")
    recorded = json.loads((tmp_path / "job" / "results.json").read_text("utf-8"))
    assert recorded["status"] == "failed" and message in recorded["error"]
    assert "load_model" not in recorded["timings_s"]


@pytest.mark.parametrize(
    ("override", "key"), [("method.lr=abc", "method.lr"), ("seed=abc", "seed")]
)
def test_wrong_types_fail_at_composition(
    make_cfg: Callable[..., DictConfig], override: str, key: str
) -> None:
    with pytest.raises(ConfigCompositionException) as caught:
        make_cfg(override)
    assert f"full_key: {key}" in str(caught.value.__cause__)


def test_secret_overrides_are_refused_before_hydra_writes_them() -> None:
    with pytest.raises(ConfigError, match=r"eval\.judge\.api_key"):
        refuse_secret_overrides(["-m", "method=npo", "+eval.judge.api_key=sk-1"])
    refuse_secret_overrides(["eval.judge.api_key_env=MY_KEY", "eval.max_new_tokens=8"])


def test_bad_model_source_names_the_choices(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"model\.source='nowhere' is not allowed.*tiny_random"):
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


def test_validate_checks_list_items_and_accepts_a_null_list() -> None:
    @dataclass
    class Layers:
        layers: list[int] | None = knob(None, "decoder layers", ge=0)

    cfg = OmegaConf.structured(Layers)
    validate(cfg)
    cfg.layers = [1, 2]
    validate(cfg)
    cfg.layers = [1, -2]
    with pytest.raises(ConfigError, match=r"layers\[1\]=-2 is out of range: it must be ≥ 0"):
        validate(cfg)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_search_space_over_its_own_keys(
    make_cfg: Callable[..., DictConfig], name: str
) -> None:
    method = METHODS.get(name)
    cfg = make_cfg(f"method={name}")
    space = method.search_space
    if name not in ("prompt", "none"):  # training-free: nothing to tune
        assert "method.lr" in space, f"{name} declares no learning rate to tune"
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in space.items()])
    assert all(o.is_sweep_override() for o in overrides), f"{name}: not sweeper syntax"
    for key in space:
        assert OmegaConf.select(cfg, key, default=MISSING) is not MISSING, f"{name}: no {key}"
