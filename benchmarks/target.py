"""The model to unlearn from: it must know the facts first, or unlearning measures nothing.

``target=finetune`` teaches the base model every question of the task (the TOFU protocol; not
the holdout, nor TOFU's real authors and world facts) and, on demand, a retain-only reference
model that never saw the forget set (TOFU's forget quality compares against it). ``target=base`` unlearns what the model already knows, optionally keeping
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

from benchmarks.cache import atomic_dir, cached_json, fingerprint
from benchmarks.data.records import DataError, QARecord, UnlearningData
from benchmarks.evaluation.evaluate import evaluate_model
from benchmarks.evaluation.generation import generate
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.privacy import forget_vs_holdout_aucs
from benchmarks.models import load_model, resolve_device
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
    asked = [r for r in data.records if r.role not in ("retain", "holdout")]
    answers = generate(
        model,
        tokenizer,
        [prompter(tokenizer, r.question) for r in asked],
        max_new_tokens=eval_cfg.max_new_tokens,
        batch_size=eval_cfg.batch_size,
        desc="only_known: probe",
    )
    known = LeakTest.from_config(eval_cfg.leak).leaks(
        [r.answer for r in asked], [a[0] for a in answers]
    )
    kept = {r.id for r, ok in zip(asked, known, strict=True) if ok}
    records = [r for r in data.records if r.role in ("retain", "holdout") or r.id in kept]
    if not any(r.role == "forget" for r in records):
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


#: Roles the target never learns: the holdout (MIA's never-seen questions), and TOFU's real
#: authors and world facts, which measure what the model knew before (TOFU fine-tunes its models
#: on the fictitious authors only).
UNTAUGHT = ("holdout", "real_authors", "world_facts")


def taught(data: UnlearningData) -> list[QARecord]:
    """What the target learns: every record but the :data:`UNTAUGHT` roles'."""
    return [r for r in data.records if r.role not in UNTAUGHT]


def load_target(cfg: Any, target_info: dict[str, Any], cache: Path) -> PreTrainedModel:
    """A fresh copy of the prepared target: a method may have changed the one it was given."""
    if target_info["kind"] == "finetune":
        model = AutoModelForCausalLM.from_pretrained(target_info["path"])
        return model.to(resolve_device(cfg.device)).eval()
    return load_model(cfg.model, cache, cfg.device)[0]


def model_key(cfg: Any) -> Any:
    """What identifies the base model in cache keys."""
    return OmegaConf.to_container(cfg.model, resolve=True)


def evaluate_target(
    target: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: UnlearningData,
    eval_cfg: Any,
    prompter: Prompter,
    target_info: dict[str, Any],
    cache: Path,
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """The target's metrics and rows: the same for every method of a sweep, so computed once."""

    def evaluate() -> dict[str, Any]:
        metrics, rows = evaluate_model(target, tokenizer, data, eval_cfg, prompter, "target")
        return {"metrics": metrics, "rows": rows}

    path = target_cache_path(cache, "target", target_info, eval_cfg, data, prompter)
    saved = evaluate() if path is None else cached_json(path, evaluate)[0]
    return saved["metrics"], saved["rows"]


def target_cache_path(
    cache: Path,
    what: str,
    target_info: dict[str, Any],
    eval_cfg: Any,
    data: UnlearningData,
    prompter: Prompter,
) -> Path | None:
    """Where an evaluation of the fine-tuned target is kept (None: the base model, not cached)."""
    if target_info["kind"] != "finetune":
        return None
    key = fingerprint(
        target_info["path"],
        OmegaConf.to_container(eval_cfg, resolve=True),
        [r.id for r in data.records],
        prompter.system_prompt,
    )
    return cache / "evals" / f"{what}-{key}.json"


def reference_results(
    cfg: Any,
    data: UnlearningData,
    *,
    cache: Path,
    prompter: Prompter,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any] | None:
    """The retain-only reference model's forget truth ratios (TOFU's forget quality) and MIA AUCs
    (privleak), for the suite families that read them; None when none does or the target is the
    base model. The model is built once per target recipe and its results once per evaluation."""
    families = {"tofu", "privacy"} & set(cfg.eval.suite)
    if cfg.target.kind != "finetune" or not families:
        return None
    model, path = retain_reference(cfg, data, cache=cache, prompter=prompter, log_fn=log_fn)
    tokenizer = load_model(cfg.model, cache, cfg.device)[1]

    def evaluate() -> dict[str, Any]:
        result: dict[str, Any] = {}
        if "tofu" in families:
            scoring = OmegaConf.merge(
                cfg.eval, {"views": ["forget"], "metrics": ["answer_prob", "truth_preference"]}
            )
            _, rows = evaluate_model(model, tokenizer, data, scoring, prompter, "reference")
            result["forget_truth_ratios"] = [
                r["truth_ratio_R"] for r in rows if "truth_ratio_R" in r
            ]
        if "privacy" in families and data.with_role("holdout"):
            result["auc"] = forget_vs_holdout_aucs(
                model, tokenizer, data, prompter, k=cfg.eval.privacy.k,
                batch_size=cfg.eval.batch_size,
            )  # fmt: skip
        return result

    info = {"kind": "finetune", "path": str(path)}
    return cached_json(
        target_cache_path(cache, "reference", info, cfg.eval, data, prompter), evaluate
    )[0]


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
    base, tokenizer = load_model(cfg.model, cache, cfg.device)
    return finetuned(
        base,
        tokenizer,
        [r for r in taught(data) if r.role != "forget"],
        cfg.target,
        cache=cache,
        model_key=model_key(cfg),
        seed=cfg.target.seed,
        prompter=prompter,
        kind="reference",
        log_fn=log_fn,
    )
