"""The one forget/retain trainer every training method, the target fine-tune and UnSTAR share.

It is TRL's :class:`~trl.SFTTrainer` (its config, peft integration and training loop) extended
with what TRL lacks: a retain stream paired with the forget stream, the
``gamma * forget + alpha * retain`` combination, and a frozen reference model built lazily in
memory (TRL's trainers would load their own from disk). It owns what methods must not
re-implement; a method brings its forget loss and, optionally, its retain loss: a named one
(``retain_loss: nll | kl``) or, where it is neither (RMU's hidden-state MSE), its own function.
"""

from __future__ import annotations

import copy
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import datasets
import torch
import torch.nn.functional as F
from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import SFTConfig, SFTTrainer

from benchmarks.config import LoraSpec, TrainConfig
from benchmarks.costs import COSTS, counting_forwards
from benchmarks.prefix import label_logits
from benchmarks.prompting import count_truncated, encode_pair, pad_encoded

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Pair:
    """A formatted prompt and the answer to train (or un-train) on."""

    prompt: str
    answer: str


#: One forget example: a pair, or named pairs that a loss compares (DPO's chosen and rejected
#: answers, WHP's original and renamed prompt); the loss then gets a batch per name.
ForgetExample = Pair | dict[str, Pair]


class Reference:
    """The frozen model before this training: a LoRA model's base, or a copy of the full model."""

    def __init__(self, model: PreTrainedModel) -> None:
        self._peft = hasattr(model, "disable_adapter")
        self._model = model if self._peft else unpatched(copy.deepcopy(model)).eval()
        self._model.requires_grad_(False)

    @contextmanager
    def frozen(self) -> Iterator[PreTrainedModel]:
        """The frozen model, without gradients, for losses that read more than its logits
        (a LoRA model with its adapters disabled: share no state with it outside the block)."""
        with torch.no_grad():
            if self._peft:
                with self._model.disable_adapter():
                    yield self._model
            else:
                yield self._model

    def logits(self, batch: Batch) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with self.frozen() as model:
            return model(**inputs).logits


def unpatched(model: PreTrainedModel) -> PreTrainedModel:
    """Drop the forward TRL's SFTTrainer sets on the instance (its fused LM head): a deep copy
    would keep it, and that closure runs the *original* model, not the copy."""
    model.__dict__.pop("forward", None)
    return model


class ForgetLoss(Protocol):
    """A method's forget term: ``(model, forget batch, lazy reference) -> scalar``."""

    def __call__(
        self,
        model: PreTrainedModel,
        batch: Batch | dict[str, Batch],
        reference: Callable[[], Reference],
    ) -> torch.Tensor: ...


class RetainLoss(Protocol):
    """A method's own retain term: ``(model, retain batch, lazy reference) -> scalar``."""

    def __call__(
        self, model: PreTrainedModel, batch: Batch, reference: Callable[[], Reference]
    ) -> torch.Tensor: ...


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next label token and the mask of real (answer) positions."""
    labels = labels[:, 1:]
    mask = labels != -100
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_nll(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer NLL per sequence and answer length per sequence.

    The logits come from :func:`benchmarks.prefix.label_logits`: the output layer only where an
    answer token is predicted, the batch's common prompt prefix computed once; the same NLL and
    gradients as a plain forward, for less work."""
    logits, targets = label_logits(model, batch)
    mask = targets != -100
    logprobs = F.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return -picked.sum(-1), mask.sum(-1)


def mean_nll(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Mean answer-token NLL over the batch (prompt and padding masked)."""
    nll, lengths = sequence_nll(model, batch)
    return nll.sum() / lengths.sum().clamp(min=1)


def sequence_kl(model: PreTrainedModel, batch: Batch, reference: Reference) -> torch.Tensor:
    """KL(reference ‖ model) averaged over every position that predicts a real token: the prompt's
    and the answer's, as the KL retain term of licong-lin/negative-preference-optimization and
    open-unlearning (``kl_div(..., reduction="batchmean")`` over all positions) keeps the whole
    retain text's distribution. Padding is left out where they keep it: its KL says nothing
    about the retain text, and its share (how much padding a batch happens to have) would scale
    the term from batch to batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref_logits = reference.logits(batch)
    real = batch["attention_mask"].bool()
    mask = real[:, :-1] & real[:, 1:]
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)[mask]
    ref_logp = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)[mask]
    return F.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")


def batch_tokens(batch: Batch | dict[str, Any]) -> int:
    """Non-padding tokens of a batch, summed over its named sub-batches (forget, retain, ...)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return sum(batch_tokens(sub) for sub in batch.values() if isinstance(sub, dict))


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: ForgetExample, max_length: int
) -> dict[str, Any]:
    """Token ids and labels of a pair, or of each named pair of an example."""
    if isinstance(example, Pair):
        return encode_pair(tokenizer, example.prompt, example.answer, max_length)
    return {name: encode_example(tokenizer, pair, max_length) for name, pair in example.items()}


def _pairs(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The encoded pairs of an example (one, or one per name)."""
    return [item] if "input_ids" in item else [p for sub in item.values() for p in _pairs(sub)]


def collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Pad encoded pairs into a batch, keeping any nesting by name (forget/retain, chosen/...)."""
    if "input_ids" in items[0]:
        return pad_encoded(items, pad_id)
    return {key: collate([item[key] for item in items], pad_id) for key in items[0]}


def paired_dataset(forget: list[dict], retain: list[dict], seed: int) -> datasets.Dataset:
    """One row per forget example, each with a retain example from a seeded permutation."""
    rows: list[dict[str, Any]] = [{"forget": item} for item in forget]
    if retain:
        order = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed)).tolist()
        for index, row in enumerate(rows):
            row["retain"] = retain[order[index % len(retain)]]
    return datasets.Dataset.from_list(rows)


@dataclass
class UnlearnConfig(SFTConfig):
    """TRL's SFT config plus the forget/retain combination, which SFT has no notion of."""

    gamma: float = field(default=1.0, metadata={"help": "weight of the forget term"})
    alpha: float = field(default=0.0, metadata={"help": "weight of the retain term"})
    retain_loss: str = field(default="none", metadata={"help": "retain term: nll, kl or none"})


def trainer_args(cfg: TrainConfig, output_dir: str, seed: int) -> UnlearnConfig:
    """Our short config names mapped onto TRL's fields (one place, one meaning each)."""
    return UnlearnConfig(
        output_dir=output_dir,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        max_length=cfg.max_length,
        gamma=cfg.gamma,
        alpha=cfg.alpha,
        retain_loss=cfg.retain_loss,
        # Examples come encoded (prompt masked, forget and retain paired): TRL must not re-tokenise.
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        # TRL's defaults that would change results or speed on a CPU: bf16 autocast, recomputation.
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )


class UnlearnTrainer(SFTTrainer):
    """TRL's SFT trainer whose loss is ``gamma * forget_loss + alpha * retain_loss``; the retain
    term is the method's own ``retain_loss`` where it gives one, else the configured name."""

    def __init__(
        self,
        *args: Any,
        forget_loss: ForgetLoss,
        retain_loss: RetainLoss | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.forget_loss = forget_loss
        self.retain_loss = retain_loss
        self._reference: Reference | None = None
        self._terms: dict[str, list[float]] = defaultdict(list)

    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = Reference(self.model)
        return self._reference

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        COSTS.add(train_tokens=batch_tokens(inputs))
        forget_term = self.forget_loss(model, inputs["forget"], self.reference)
        loss = args.gamma * forget_term
        self._terms["forget_loss"].append(forget_term.item())
        own_retain = self.retain_loss is not None
        if args.alpha and (own_retain or args.retain_loss != "none") and "retain" in inputs:
            retain = inputs["retain"]
            if self.retain_loss is not None:
                retain_term = self.retain_loss(model, retain, self.reference)
            elif args.retain_loss == "nll":
                retain_term = mean_nll(model, retain)
            elif args.retain_loss == "kl":
                retain_term = sequence_kl(model, retain, self.reference())
            else:
                raise ValueError(f"retain_loss={args.retain_loss!r}; choose nll, kl or none")
            loss = loss + args.alpha * retain_term
            self._terms["retain_loss"].append(retain_term.item())
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._terms.items():
            if values:
                logs[name] = sum(values) / len(values)
        self._terms.clear()
        super().log(logs, start_time)


class _History(TrainerCallback):
    def __init__(self, phase: str, log_fn: Callable[[dict[str, float]], None] | None) -> None:
        self.phase, self.log_fn, self.records = phase, log_fn, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = {"step": state.global_step, **{k: float(v) for k, v in (logs or {}).items()}}
        self.records.append(record)
        if self.log_fn:
            self.log_fn({f"{self.phase}/{k}": v for k, v in record.items()})


def lora_config(spec: LoraSpec) -> LoraConfig:
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[ForgetExample],
    retain: list[Pair],
    forget_loss: ForgetLoss,
    cfg: TrainConfig,
    *,
    seed: int,
    phase: str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
    retain_loss: RetainLoss | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[PreTrainedModel, list[dict[str, float]]]:
    """Train on forget (and retain) pairs; returns the plain model (LoRA merged) and loss history.

    ``retain_loss`` replaces the retain term named in ``cfg.retain_loss`` (for a term that is
    neither NLL nor KL); it is used when ``cfg.alpha`` > 0 and there are retain pairs.
    ``callbacks`` join the trainer's (the early-stopping rule of
    :mod:`benchmarks.evaluation.selection`). Steps, tokens and forward passes go to ``COSTS``."""

    def encode(examples: list[ForgetExample], stream: str) -> list[dict[str, Any]]:
        encoded = [encode_example(tokenizer, example, cfg.max_length) for example in examples]
        flags = [pair["truncated"] for item in encoded for pair in _pairs(item)]
        count_truncated(f"{phase}/{stream}", flags, cfg.max_length)
        return encoded

    dataset = paired_dataset(encode(forget, "forget"), encode(retain, "retain"), seed)
    model.train()
    history = _History(phase, log_fn)
    with tempfile.TemporaryDirectory(prefix="unstar-bench-train-") as scratch:
        pad_id = tokenizer.pad_token_id
        trainer = UnlearnTrainer(
            model=model,
            args=trainer_args(cfg, scratch, seed),
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=lambda items: collate(items, pad_id),
            peft_config=lora_config(cfg.lora) if cfg.lora.enabled else None,
            forget_loss=forget_loss,
            retain_loss=retain_loss,
            callbacks=[history, *callbacks],
        )
        with counting_forwards(model), COSTS.timed("train"):
            trainer.train()
            COSTS.add(optimizer_steps=trainer.state.global_step)
    model = trainer.model
    if cfg.lora.enabled:
        model = model.merge_and_unload()
    unpatched(model).eval()
    return model, history.records


def nll_loss(
    model: PreTrainedModel, batch: Batch, reference: Callable[[], Reference]
) -> torch.Tensor:
    """Plain supervised fine-tuning: learn the 'forget' stream (used for targets, IDK, UnSTAR)."""
    return mean_nll(model, batch)
