"""The one forget/retain trainer every training method, the target fine-tune and UnSTAR share.

It owns what methods must not re-implement: pairing forget and retain batches, the
``gamma * forget + alpha * retain`` combination, the frozen reference model (built lazily, only
when a loss asks for it), LoRA or full fine-tuning, and logging of each loss term. A method brings
its forget loss (and optionally overrides the retain loss type).
"""

from __future__ import annotations

import copy
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from benchmarks.prompting import encode_pair, pad_encoded

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
        self._model = model if self._peft else copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, batch: Batch) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self._peft:
            with self._model.disable_adapter():
                return self._model(**inputs).logits
        return self._model(**inputs).logits


class ForgetLoss(Protocol):
    """A method's forget term: ``(model, forget batch, lazy reference) -> scalar``."""

    def __call__(
        self,
        model: PreTrainedModel,
        batch: Batch | dict[str, Batch],
        reference: Callable[[], Reference],
    ) -> torch.Tensor: ...


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next label token and the mask of real (answer) positions."""
    labels = labels[:, 1:]
    mask = labels != -100
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_nll(model: PreTrainedModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer NLL per sequence and answer length per sequence."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    picked, mask = token_logprobs(logits, batch["labels"])
    return -picked.sum(-1), mask.sum(-1)


def mean_nll(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Mean answer-token NLL over the batch (prompt and padding masked)."""
    nll, lengths = sequence_nll(model, batch)
    return nll.sum() / lengths.sum().clamp(min=1)


def answer_kl(model: PreTrainedModel, batch: Batch, reference: Reference) -> torch.Tensor:
    """KL(reference ‖ model) averaged over answer tokens only (no prompt, no padding)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref_logits = reference.logits(batch)
    mask = batch["labels"][:, 1:] != -100
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)[mask]
    ref_logp = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)[mask]
    return F.kl_div(logp, ref_logp, log_target=True, reduction="batchmean")


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: ForgetExample, max_length: int
) -> dict[str, Any]:
    """Token ids and labels of a pair, or of each named pair of an example."""
    if isinstance(example, Pair):
        return encode_pair(tokenizer, example.prompt, example.answer, max_length)
    return {name: encode_example(tokenizer, pair, max_length) for name, pair in example.items()}


def collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Pad encoded pairs into a batch, keeping any nesting by name (forget/retain, chosen/...)."""
    if "input_ids" in items[0]:
        return pad_encoded(items, pad_id)
    return {key: collate([item[key] for item in items], pad_id) for key in items[0]}


class PairedDataset(Dataset):
    """Indexes the forget pairs; each comes with a retain pair from a seeded permutation."""

    def __init__(self, forget: list[dict], retain: list[dict], seed: int) -> None:
        self.forget, self.retain = forget, retain
        generator = torch.Generator().manual_seed(seed)
        self.retain_order = torch.randperm(len(retain), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict[str, dict]:
        item = {"forget": self.forget[index]}
        if self.retain:
            item["retain"] = self.retain[self.retain_order[index % len(self.retain)]]
        return item


class UnlearnTrainer(Trainer):
    """HF Trainer whose loss is ``gamma * forget_loss + alpha * retain_loss``."""

    def __init__(
        self,
        *args: Any,
        forget_loss: ForgetLoss,
        gamma: float,
        alpha: float,
        retain_loss: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.forget_loss, self.gamma, self.alpha, self.retain_loss = (
            forget_loss,
            gamma,
            alpha,
            retain_loss,
        )
        self._reference: Reference | None = None
        self._terms: dict[str, list[float]] = defaultdict(list)

    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = Reference(self.model)
        return self._reference

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget_term = self.forget_loss(model, inputs["forget"], self.reference)
        loss = self.gamma * forget_term
        self._terms["forget_loss"].append(forget_term.item())
        if self.alpha and self.retain_loss != "none" and "retain" in inputs:
            retain = inputs["retain"]
            if self.retain_loss == "nll":
                retain_term = mean_nll(model, retain)
            elif self.retain_loss == "kl":
                retain_term = answer_kl(model, retain, self.reference())
            else:
                raise ValueError(f"retain_loss={self.retain_loss!r}; choose nll, kl or none")
            loss = loss + self.alpha * retain_term
            self._terms["retain_loss"].append(retain_term.item())
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        for name, values in self._terms.items():
            if values:
                logs[name] = sum(values) / len(values)
        self._terms.clear()
        super().log(logs, *args, **kwargs)


class _History(TrainerCallback):
    def __init__(self, phase: str, log_fn: Callable[[dict[str, float]], None] | None) -> None:
        self.phase, self.log_fn, self.records = phase, log_fn, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = {"step": state.global_step, **{k: float(v) for k, v in (logs or {}).items()}}
        self.records.append(record)
        if self.log_fn:
            self.log_fn({f"{self.phase}/{k}": v for k, v in record.items()})


def apply_lora(model: PreTrainedModel, lora_cfg: Any) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=lora_cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[ForgetExample],
    retain: list[Pair],
    forget_loss: ForgetLoss,
    cfg: Any,
    *,
    seed: int,
    phase: str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, list[dict[str, float]]]:
    """Train on forget (and retain) pairs; returns the plain model (LoRA merged) and loss history.

    ``cfg`` holds lr, epochs, batch_size, max_steps, gamma, alpha, retain_loss, warmup_ratio,
    weight_decay, max_length and ``lora`` (``enabled``, r, alpha, dropout, target_modules).
    """

    def encode(examples: list[ForgetExample]) -> list[dict[str, Any]]:
        return [encode_example(tokenizer, example, cfg.max_length) for example in examples]

    dataset = PairedDataset(encode(forget), encode(retain), seed)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    model.train()
    history = _History(phase, log_fn)
    with tempfile.TemporaryDirectory(prefix="unstar-bench-train-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.get("grad_accum", 1),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.get("max_steps") or -1,
            learning_rate=cfg.lr,
            lr_scheduler_type=cfg.get("scheduler", "linear"),
            warmup_steps=cfg.get("warmup", 0.0),
            weight_decay=cfg.get("weight_decay", 0.0),
            max_grad_norm=cfg.get("max_grad_norm", 1.0),
            logging_steps=cfg.get("logging_steps", 5),
            save_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=False,
        )
        pad_id = tokenizer.pad_token_id
        trainer = UnlearnTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=lambda items: collate(items, pad_id),
            forget_loss=forget_loss,
            gamma=cfg.get("gamma", 1.0),
            alpha=cfg.get("alpha", 0.0),
            retain_loss=cfg.get("retain_loss", "none"),
            callbacks=[history],
        )
        trainer.train()
    model = trainer.model
    if cfg.lora.enabled:
        model = model.merge_and_unload()
    model.eval()
    return model, history.records


def nll_loss(
    model: PreTrainedModel, batch: Batch, reference: Callable[[], Reference]
) -> torch.Tensor:
    """Plain supervised fine-tuning: learn the 'forget' stream (used for targets, IDK, UnSTAR)."""
    return mean_nll(model, batch)
