"""The method interface and registry: ``method=<name>`` picks a class registered here.

A method turns the target model into an unlearned one; it never evaluates itself. Training
methods are a forget loss on the shared trainer (:mod:`benchmarks.training`) plus, where needed,
their own data recipe (which pairs they train on) and their own retain term.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.cache import atomic_dir
from benchmarks.config import MethodConfig
from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.evaluation.selection import StopWhenForgotten, stopping_rule
from benchmarks.prompting import Prompter
from benchmarks.registry import Registry
from benchmarks.training import Batch, ForgetExample, Pair, Reference, RetainLoss, train


@dataclass
class JobContext:
    """What a method may use besides the model and data: where to write, how to log, the seed."""

    seed: int
    output_dir: Path
    cache_dir: Path
    prompter: Prompter = field(default_factory=Prompter)
    model_key: str = ""  # identifies the target model, for caches of what it generates
    load_base: Callable[[], PreTrainedModel] | None = None  # the base model, before the target
    log_fn: Callable[[dict[str, float]], None] | None = None
    #: The job's ``eval`` config: the stopping rule probes with its leak test and answer length.
    eval_cfg: Any = None


@dataclass
class Unlearned:
    """A method's result: the model, how to prompt it, and the method's own run metrics."""

    model: PreTrainedModel
    prompter: Prompter
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The wrong answers the method trained the model to give, by forget record id (UnSTAR's
    #: anti-samples); the echo probe asks whether the model repeats them on questions it was not
    #: trained on. Empty for methods that train on no wrong answer: refusals (IDK, DPO's chosen
    #: answer) are counted by the refusal share, and the true answers that GA, NPO and the
    #: distillation methods push away from are no wrong answers.
    wrong_answers: dict[str, list[str]] = field(default_factory=dict)


class Method:
    """Base of every method; ``cfg`` is the resolved ``method`` config group, typed by
    ``config_class`` (a method with knobs of its own declares a subclass of MethodConfig)."""

    config_class: type[MethodConfig] = MethodConfig
    #: What a tuner may vary: Hydra Optuna sweeper syntax by config key (empty: nothing to tune).
    search_space: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def unlearn(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        data: UnlearningData,
        ctx: JobContext,
    ) -> Unlearned:
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")

#: Beside a saved model's weights: what evaluating it again needs besides them (the method that
#: made it, the system prompt it is asked under, the wrong answers it was trained on).
SIDECAR = "unlearned.json"


def save_unlearned(
    unlearned: Unlearned, tokenizer: PreTrainedTokenizerBase, directory: Path, method: str
) -> dict[str, Any]:
    """Keep an unlearned model in ``directory`` (replaced whole, never left half written): the
    model's own ``save_pretrained`` writes a LoRA adapter where the model still carries unmerged
    adapters (a peft model) and the full weights as safetensors otherwise; the shared trainer
    merges its adapters, so every method of the harness saves full weights. Beside them the
    tokenizer and :data:`SIDECAR`. Returns what ``results.json`` records under ``saved_model``."""
    sidecar = {
        "method": method,
        "system_prompt": unlearned.prompter.system_prompt,
        "wrong_answers": unlearned.wrong_answers,
    }
    with atomic_dir(directory) as tmp:
        unlearned.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, ensure_ascii=False, indent=1), "utf-8")
    return {
        "path": str(directory.resolve()),
        "format": "lora_adapter" if (directory / "adapter_config.json").exists() else "full",
        "files": sorted(p.name for p in directory.iterdir()),
    }


def load_saved(directory: Path, target: PreTrainedModel, prompter: Prompter) -> Unlearned:
    """A saved or external Hugging Face checkpoint as an unlearned model: a LoRA adapter directory
    (``adapter_config.json``) is applied to ``target`` and merged; a full model directory
    (``config.json``) is loaded in the target's dtype, on its device. Its :data:`SIDECAR`, where
    present, restores the system prompt and the trained wrong answers."""
    directory = directory.expanduser()
    if (directory / "adapter_config.json").exists():
        from peft import PeftModel

        model, kind = (
            PeftModel.from_pretrained(target, directory).merge_and_unload(),
            "lora_adapter",
        )
    elif (directory / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=target.dtype)
        model, kind = model.to(target.device), "full"
    else:
        raise FileNotFoundError(
            f"{directory} holds no Hugging Face model (config.json) nor LoRA adapter "
            "(adapter_config.json); point method.checkpoint at the directory a job's "
            "save_model=true wrote (<job dir>/model) or at a save_pretrained directory"
        )
    vocab, expected = (m.get_input_embeddings().num_embeddings for m in (model, target))
    if vocab != expected:
        raise ValueError(
            f"{directory} has a vocabulary of {vocab} tokens, the job's model {expected}: the "
            "checkpoint was made from another base model. Set model= (model=hub "
            "model.name_or_path=DIR) to the model it was made from."
        )
    sidecar_path = directory / SIDECAR
    sidecar = json.loads(sidecar_path.read_text("utf-8")) if sidecar_path.exists() else {}
    if "system_prompt" in sidecar:
        prompter = replace(prompter, system_prompt=sidecar["system_prompt"])
    return Unlearned(
        model.eval(),
        prompter,
        {"checkpoint": str(directory.resolve()), "format": kind, "saved_by": sidecar.get("method")},
        wrong_answers=sidecar.get("wrong_answers", {}),
    )


def qa_pairs(
    records: list[QARecord], tokenizer: PreTrainedTokenizerBase, prompter: Prompter
) -> list[Pair]:
    return [Pair(prompter(tokenizer, r.question), r.answer) for r in records]


class TrainingMethod(Method):
    """A method that is a forget loss on the shared trainer; override the recipe hooks as needed."""

    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-6, 1e-4))",
        "method.epochs": "range(1, 10)",
    }
    #: The retain weight, for methods that train a retain term.
    RETAIN_WEIGHT: ClassVar[dict[str, str]] = {"method.alpha": "interval(0.1, 5.0)"}

    #: The retain term. None: the one named in the config (``retain_loss: nll | kl | none``); a
    #: method whose retain term is neither (RMU: MSE to the frozen model's hidden states)
    #: defines ``retain_loss(self, model, batch, reference) -> scalar`` instead.
    retain_loss: RetainLoss | None = None

    def forget_loss(
        self,
        model: PreTrainedModel,
        batch: Batch | dict[str, Batch],
        reference: Callable[[], Reference],
    ) -> torch.Tensor:
        raise NotImplementedError

    def forget_pairs(
        self, data: UnlearningData, tokenizer: PreTrainedTokenizerBase, ctx: JobContext
    ) -> list[ForgetExample]:
        return qa_pairs(data.forget, tokenizer, ctx.prompter)

    def retain_pairs(
        self, data: UnlearningData, tokenizer: PreTrainedTokenizerBase, ctx: JobContext
    ) -> list[Pair]:
        return qa_pairs(data.retain, tokenizer, ctx.prompter)

    def stopping(
        self, data: UnlearningData, tokenizer: PreTrainedTokenizerBase, ctx: JobContext
    ) -> StopWhenForgotten:
        """The early-stopping rule (``method.stop_when_forgotten``); pass it to every ``train``
        call and put its ``record()`` in the metrics as ``stopping``."""
        return stopping_rule(self.cfg, data, tokenizer, ctx.prompter, ctx.eval_cfg)

    def unlearn(self, model, tokenizer, data, ctx) -> Unlearned:
        stop = self.stopping(data, tokenizer, ctx)
        model, history = train(
            model,
            tokenizer,
            self.forget_pairs(data, tokenizer, ctx),
            self.retain_pairs(data, tokenizer, ctx) if self.cfg.alpha else [],
            self.forget_loss,
            self.cfg,
            seed=ctx.seed,
            phase="unlearn",
            log_fn=ctx.log_fn,
            retain_loss=self.retain_loss,
            callbacks=[stop],
        )
        final = history[-1] if history else {}
        metrics = {"train_loss": final.get("train_loss"), "stopping": stop.record()}
        return Unlearned(model, ctx.prompter, metrics)
