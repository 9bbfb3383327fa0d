"""The model to unlearn from: it must know the facts first, or unlearning measures nothing.

``target=finetune`` teaches the base model every question of the task (the TOFU protocol) and,
on demand, a retain-only reference model that never saw the forget set (TOFU's forget quality
compares against it). ``target=base`` unlearns what the model already knows, optionally keeping
only the questions it answers correctly (``data.only_known``). Fine-tuned models are cached on
disk under a hash of everything that shaped them, so a sweep builds each once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.cache import atomic_dir, fingerprint
from benchmarks.data.records import DataError, QARecord, UnlearningData
from benchmarks.evaluation.evaluate import leak_test_from
from benchmarks.evaluation.generation import generate
from benchmarks.prompting import Prompter
from benchmarks.training import Pair, nll_loss, train

log = logging.getLogger(__name__)


def teaching_pairs(
    records: list[QARecord],
    tokenizer: PreTrainedTokenizerBase,
    prompter: Prompter,
    paraphrases: bool,
) -> list[Pair]:
    """Each question (and its paraphrases, so the target knows the fact in any wording)."""
    pairs = []
    for record in records:
        questions = [record.question, *(record.paraphrases if paraphrases else ())]
        pairs += [Pair(prompter(tokenizer, q), record.answer) for q in questions]
    return pairs


def finetuned(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[QARecord],
    target_cfg: Any,
    *,
    cache: Path,
    model_key: Any,
    seed: int,
    prompter: Prompter,
    kind: str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, Path]:
    """``base`` fine-tuned on ``records``, from the cache when the same inputs built it before."""
    train_cfg = OmegaConf.to_container(target_cfg.train, resolve=True)
    key = fingerprint(
        model_key, kind, train_cfg, seed, prompter.system_prompt, [asdict(r) for r in records]
    )
    path = cache / "targets" / f"{kind}-{key}"
    if (path / "config.json").exists():
        log.info("Using cached %s model %s", kind, path)
        return AutoModelForCausalLM.from_pretrained(path).to(base.device).eval(), path
    pairs = teaching_pairs(records, tokenizer, prompter, target_cfg.train_paraphrases)
    model, _ = train(
        base, tokenizer, pairs, [], nll_loss, target_cfg.train, seed=seed, phase=kind, log_fn=log_fn
    )
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
    return model, path


def known_only(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: UnlearningData,
    eval_cfg: Any,
    prompter: Prompter,
) -> UnlearningData:
    """Keep the records the model answers correctly (per the leak test); retain and holdout stay."""
    asked = [r for r in data.records if r.split not in ("retain", "holdout")]
    answers = generate(
        model,
        tokenizer,
        [prompter(tokenizer, r.question) for r in asked],
        max_new_tokens=eval_cfg.max_new_tokens,
        batch_size=eval_cfg.batch_size,
        desc="only_known: probe",
    )
    known = leak_test_from(eval_cfg.leak).leaks([r.answer for r in asked], [a[0] for a in answers])
    kept = {r.id for r, ok in zip(asked, known, strict=True) if ok}
    records = [r for r in data.records if r.split in ("retain", "holdout") or r.id in kept]
    if not any(r.split == "forget" for r in records):
        raise DataError(
            "data.only_known=true left no forget question: the base model knows none of them. "
            "Use target=finetune so the model learns the facts first."
        )
    log.info("only_known kept %d of %d evaluated questions", len(kept), len(asked))
    return data.with_records(records)


def prepare_target(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: UnlearningData,
    cfg: Any,
    *,
    cache: Path,
    prompter: Prompter,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, UnlearningData, dict[str, Any]]:
    """The target model, the data it is evaluated on, and where it came from."""
    if cfg.target.kind == "base":
        if cfg.data.get("only_known"):
            data = known_only(base, tokenizer, data, cfg.eval, prompter)
        return base, data, {"kind": "base"}
    if cfg.target.kind != "finetune":
        raise ValueError(f"target.kind={cfg.target.kind!r}; choose base or finetune")
    model, path = finetuned(
        base,
        tokenizer,
        taught(data),
        cfg.target,
        cache=cache,
        model_key=model_key(cfg),
        seed=cfg.target.seed,
        prompter=prompter,
        kind="target",
        log_fn=log_fn,
    )
    return model, data, {"kind": "finetune", "path": str(path)}


def taught(data: UnlearningData) -> list[QARecord]:
    """What the target learns: every record but the holdout (MIA's never-seen questions)."""
    return [r for r in data.records if r.split != "holdout"]


def load_target(cfg: Any, target_info: dict[str, Any], cache: Path) -> PreTrainedModel:
    """A fresh copy of the prepared target: a method may have changed the one it was given."""
    from benchmarks.models import load_model, resolve_device

    if target_info["kind"] == "finetune":
        model = AutoModelForCausalLM.from_pretrained(target_info["path"])
        return model.to(resolve_device(cfg.device)).eval()
    return load_model(cfg.model, cache, cfg.device)[0]


def model_key(cfg: Any) -> Any:
    """What identifies the base model in cache keys."""
    return OmegaConf.to_container(cfg.model, resolve=True)


def retain_reference(
    cfg: Any,
    data: UnlearningData,
    *,
    cache: Path,
    prompter: Prompter,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, Path]:
    """The base model fine-tuned on what the target learns but the forget set (TOFU's 'retain
    model'), and where it is cached."""
    from benchmarks.models import load_model

    base, tokenizer = load_model(cfg.model, cache, cfg.device)
    return finetuned(
        base,
        tokenizer,
        [r for r in taught(data) if r.split != "forget"],
        cfg.target,
        cache=cache,
        model_key=model_key(cfg),
        seed=cfg.target.seed,
        prompter=prompter,
        kind="reference",
        log_fn=log_fn,
    )
