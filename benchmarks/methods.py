"""The method interface and registry: ``method=<name>`` picks a class registered here.

A method turns the target model into an unlearned one; it never evaluates itself. Training
methods are a forget loss on the shared trainer (:mod:`benchmarks.training`) plus, where needed,
their own data recipe (which pairs they train on) and their own retain term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
