"""RMU on the tiny random model (2 layers): the forget term is MSE(h_L, c·u) by hand, a few steps
lower it, the retain term is MSE to the frozen model's hidden states (0 before training), only the
chosen layers' parameters move, the layer is checked against the model, and a job runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from test_baselines import DATA, lazy_reference

from baselines.rmu import RMU
from benchmarks import training
from benchmarks.config import ConfigError
from benchmarks.job import run_job
from benchmarks.methods import METHODS, JobContext
from benchmarks.models import cache_dir, load_model
from benchmarks.training import collate, encode_example

ON_TINY = "method.layer=1"


@pytest.fixture
def tiny(make_cfg: Callable[..., DictConfig]) -> tuple:
    return load_model(make_cfg().model, cache_dir(), "cpu")


def build(make_cfg: Callable[..., DictConfig], *overrides: str) -> RMU:
    return METHODS.get("rmu")(make_cfg("method=rmu", ON_TINY, *overrides).method)


def context(tmp_path: Path, logs: list[dict] | None = None) -> JobContext:
    log_fn = logs.append if logs is not None else None
    return JobContext(seed=0, output_dir=tmp_path, cache_dir=tmp_path, log_fn=log_fn)


def batch_of(method: RMU, tokenizer, tmp_path: Path, stream: str = "forget") -> dict:
    pairs = getattr(method, f"{stream}_pairs")(DATA, tokenizer, context(tmp_path))
    return collate([encode_example(tokenizer, pair, 256) for pair in pairs], tokenizer.pad_token_id)


@pytest.mark.parametrize("positions", ["all", "answer"])
def test_first_forget_loss_is_the_mse_to_the_steering_vector(
    make_cfg, tiny, tmp_path, positions
) -> None:
    model, tokenizer = tiny
    method = build(
        make_cfg, "method.layer=0", "method.steering_coeff=3", f"method.positions={positions}"
    )
    method.prepare(model, seed=0)
    batch = batch_of(method, tokenizer, tmp_path)

    loss = method.forget_loss(model, batch, lazy_reference(model))

    # By hand: hidden_states[1] is the output of layer 0; u is WMDP's normalised torch.rand.
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        hidden = model(**inputs, output_hidden_states=True).hidden_states[1]
    u = torch.rand(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    u = u / u.norm()
    kept = batch["attention_mask"].bool() if positions == "all" else batch["labels"] != -100
    assert kept.sum() < kept.numel(), "padding (and prompts) should be left out"
    expected = ((hidden - 3 * u) ** 2)[kept].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert method.activation_norm == pytest.approx(hidden[kept].norm(dim=-1).mean().item())


def test_the_steering_vector_is_drawn_once_with_the_job_seed(make_cfg, tiny) -> None:
    model, _ = tiny
    method = build(make_cfg)
    method.prepare(model, seed=0)
    first = method.direction
    method.prepare(model, seed=0)
    assert torch.equal(method.direction, first)
    assert method.direction.norm().item() == pytest.approx(1.0)
    method.prepare(model, seed=1)
    assert not torch.equal(method.direction, first)


def test_a_few_steps_lower_the_forget_loss(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    method = build(
        make_cfg,
        "method.alpha=0",
        "method.steering_coeff=1",
        "method.lr=5e-2",
        "method.max_steps=5",
    )
    method.prepare(model, seed=0)
    batch = batch_of(method, tokenizer, tmp_path)
    with torch.no_grad():
        before = method.forget_loss(model, batch, lazy_reference(model)).item()

    unlearned = method.unlearn(model, tokenizer, DATA, context(tmp_path)).model

    with torch.no_grad():
        after = method.forget_loss(unlearned, batch, lazy_reference(unlearned)).item()
    assert after < 0.9 * before


def test_retain_term_is_zero_when_the_model_is_the_reference(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    method = build(make_cfg)
    method.prepare(model, seed=0)
    batch = batch_of(method, tokenizer, tmp_path, "retain")

    assert method.retain_loss(model, batch, lazy_reference(model)).item() == pytest.approx(0.0)

    with torch.no_grad():  # moved away from the reference, the term grows
        layer0 = model.model.layers[0].mlp.down_proj.weight
        layer0 += 0.5 * torch.randn_like(layer0)
    frozen = lazy_reference(load_model(make_cfg().model, cache_dir(), "cpu")[0])
    assert method.retain_loss(model, batch, frozen).item() > 1e-6


def test_the_trainer_uses_rmu_retain_term(make_cfg, tiny, tmp_path, monkeypatch) -> None:
    model, tokenizer = tiny
    method = build(make_cfg, "method.max_steps=2", "method.logging_steps=1")
    calls: list[float] = []
    retain_loss = method.retain_loss

    def recorded(*args):
        value = retain_loss(*args)
        calls.append(value.item())
        return value

    monkeypatch.setattr(method, "retain_loss", recorded)
    monkeypatch.setattr(training, "mean_nll", lambda *a: pytest.fail("NLL retain used"))
    logs: list[dict] = []

    method.unlearn(model, tokenizer, DATA, context(tmp_path, logs))

    assert len(calls) == 2 and calls[0] == pytest.approx(0.0)
    assert any("unlearn/retain_loss" in entry for entry in logs)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_only_the_chosen_layers_parameters_change(make_cfg, tiny, tmp_path, lora) -> None:
    model, tokenizer = tiny
    method = build(
        make_cfg,
        "method.layers=[0]",
        "method.lr=1e-2",
        "method.max_steps=2",
        f"method.lora.enabled={str(lora).lower()}",
    )
    before = {name: value.clone() for name, value in model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}

    unlearned = method.unlearn(model, tokenizer, DATA, context(tmp_path))

    after = unlearned.model.state_dict()
    assert set(after) == set(before)
    changed = {name for name in before if not torch.equal(after[name], before[name])}
    assert changed == {"model.layers.0.mlp.down_proj.weight"}
    assert unlearned.metrics["rmu_updated"] == ["model.layers.0.mlp.down_proj.weight"]
    assert {n: p.requires_grad for n, p in unlearned.model.named_parameters()} == flags


def test_default_layers_are_the_two_before_the_steered_one_and_it(make_cfg, tiny) -> None:
    model, _ = tiny
    names = build(make_cfg).prepare(model, seed=0)  # layer 1: layers 0 and 1
    assert names == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)]
    wmdp = build(make_cfg, "method.layer=7")
    assert wmdp.update_layers() == [5, 6, 7]
    pattern = build(make_cfg, "method.param_pattern='mlp.(up|down)_proj'", "method.layers=[1]")
    assert pattern.prepare(model, seed=0) == [
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("method.layer=7",), r"method.layer=7, but the model has 2 decoder layers \(0..1\)"),
        (("method.layer=0", "method.layers=[0,1]"), r"method.layers=\[0, 1\].*among 0..0"),
        (("method.param_pattern=no_such",), "matches no parameter of layers"),
    ],
)
def test_layers_and_pattern_are_checked_against_the_model(
    make_cfg, tiny, overrides, message
) -> None:
    model, _ = tiny
    with pytest.raises(ConfigError, match=message):
        build(make_cfg, *overrides).prepare(model, seed=0)


def test_lora_needs_linear_modules(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    method = build(make_cfg, "method.lora.enabled=true", "method.param_pattern=layernorm")
    with pytest.raises(ConfigError, match="adapters on linear layers"):
        method.unlearn(model, tokenizer, DATA, context(tmp_path))


def test_search_space_is_hydra_sweeper_syntax_over_method_keys(make_cfg) -> None:
    cfg = make_cfg("method=rmu")
    overrides = OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in RMU.search_space.items()]
    )
    assert all(override.is_sweep_override() for override in overrides)
    assert {"method.lr", "method.steering_coeff", "method.alpha", "method.layer"} == set(
        RMU.search_space
    )
    for key in RMU.search_space:
        assert OmegaConf.select(cfg, key) is not None


def test_rmu_runs_a_job_and_the_default_layer_fails_clearly_on_the_tiny_model(
    make_cfg, tmp_path
) -> None:
    common = ("method=rmu", "method.max_steps=2", "data.forget_set=forget_1", "eval=quick")
    results = run_job(make_cfg(*common, ON_TINY), tmp_path / "ok")
    assert results["status"] == "ok"
    assert results["method_metrics"]["rmu_layer"] == 1
    assert results["method_metrics"]["rmu_activation_norm"] > 0
    assert results["metrics"]["unlearned"]["forget"]

    with pytest.raises(ConfigError, match="2 decoder layers"):
        run_job(make_cfg(*common), tmp_path / "default-layer")
