"""Any model can face the battery: a job keeps its unlearned model (``save_model=true``), and
``method=none method.checkpoint=DIR`` evaluates a saved or external checkpoint with the full
suite, no unlearning, against the job's own target. On the tiny model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.config import LoraSpec
from benchmarks.job import job_key, run_job
from benchmarks.methods import SIDECAR, Unlearned, load_saved, save_unlearned
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter
from benchmarks.training import lora_config

#: A few optimiser steps, and a suite with attacks that train and sample, and the probes.
TARGET = ("target.train.max_steps=2", "eval.attacks.many_shot.shots=2")
SUITE = (
    "eval.attacks.leak_at_k.k=2",
    "eval.attacks.relearn.steps=1",
    "eval.attacks.relearn_related.steps=1",
    "eval.suite=[attacks,criteria,outcomes,echo]",
)


def test_a_saved_model_evaluated_again_gives_the_same_unlearned_results(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    method = ("method=grad_ascent", "method.max_steps=2", "method.lr=1e-3")
    first = run_job(make_cfg(*TARGET, *SUITE, *method, "save_model=true"), tmp_path / "a")
    saved = first["saved_model"]
    assert saved["path"] == str((tmp_path / "a" / "model").resolve())
    assert saved["format"] == "full"
    assert {"config.json", "model.safetensors", "tokenizer.json", SIDECAR} <= set(saved["files"])
    assert "save_model" in first["timings_s"]

    checkpoint = f"method.checkpoint={saved['path']}"
    again = run_job(make_cfg(*TARGET, *SUITE, "method=none", checkpoint), tmp_path / "b")
    assert again["status"] == "ok" and "saved_model" not in again
    assert again["method_metrics"]["saved_by"] == "grad_ascent"
    assert again["metrics"]["target"] == first["metrics"]["target"]  # the real target, before
    assert again["metrics"]["unlearned"] == first["metrics"]["unlearned"]
    assert again["metrics"]["unlearned"] != first["metrics"]["target"]  # the check has teeth
    for key in ("attacks", "robustness", "criteria", "outcomes", "echo"):
        assert again[key]["unlearned"] == first[key]["unlearned"], key

    control = run_job(make_cfg(*TARGET, "eval.suite=[]", "method=none"), tmp_path / "c")
    assert control["metrics"]["unlearned"] == control["metrics"]["target"]


def test_the_sidecar_restores_the_system_prompt_and_the_wrong_answers(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    model, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    wrong = {"einstein-birthplace": ["Munich", "Zurich"]}
    unlearned = Unlearned(model, Prompter(system_prompt="Forget Einstein."), {}, wrong)
    save_unlearned(unlearned, tokenizer, tmp_path / "model", "unstar")

    target, _ = load_model(make_cfg("model.seed=1").model, cache_dir(), "cpu")
    loaded = load_saved(tmp_path / "model", target, Prompter())
    assert loaded.prompter.system_prompt == "Forget Einstein."
    assert loaded.wrong_answers == wrong
    assert loaded.metrics["saved_by"] == "unstar" and loaded.metrics["format"] == "full"
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())


def test_a_lora_adapter_is_saved_alone_and_applied_to_the_target(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    target, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    adapted = get_peft_model(copy.deepcopy(target), lora_config(LoraSpec(enabled=True, r=4)))
    with torch.no_grad():  # adapters start as the identity; make them change the model
        for name, weight in adapted.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    saved = save_unlearned(Unlearned(adapted, Prompter()), tokenizer, tmp_path / "adapter", "x")
    assert saved["format"] == "lora_adapter"
    assert (
        "adapter_model.safetensors" in saved["files"] and "model.safetensors" not in saved["files"]
    )

    loaded = load_saved(tmp_path / "adapter", copy.deepcopy(target), Prompter()).model
    ids = tokenizer("Who was Ada Lovelace?", return_tensors="pt").input_ids
    with torch.no_grad():
        expected, got, before = adapted(ids).logits, loaded(ids).logits, target(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, before, atol=1e-3)
    assert not hasattr(loaded, "peft_config")  # merged: evaluated like any model


def test_a_checkpoint_that_does_not_fit_the_job_is_refused_with_what_to_do(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    target, _ = load_model(make_cfg().model, cache_dir(), "cpu")
    with pytest.raises(FileNotFoundError, match="save_model=true"):
        load_saved(tmp_path, target, Prompter())
    other = LlamaForCausalLM(
        LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2)
    )  # fmt: skip
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=r"vocabulary of 300 tokens.*model\.name_or_path"):
        load_saved(tmp_path / "other", target, Prompter())


def test_a_checkpoint_saved_anew_is_a_new_job(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(b"first")
    config = {"method": {"name": "none", "checkpoint": str(tmp_path / "model")}}
    first = job_key(config)
    assert job_key(config) == first
    weights.write_bytes(b"second model")
    assert job_key(config) != first
    assert job_key({"method": {"name": "none", "checkpoint": None}}) != first
