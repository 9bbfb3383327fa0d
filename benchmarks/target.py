"""The model to unlearn from: it must know the facts first, or unlearning measures nothing.

``target=finetune`` teaches the base model every question of the task (the TOFU protocol; not
the holdout, nor TOFU's real authors and world facts) and, on demand, a retain-only reference
model that never saw the forget set (TOFU's forget quality compares against it). Its knowledge
gate (``target.gate``) trains the recipe, checks what the model knows, and trains on, checked each
epoch, until every taught split reaches ``min_known_share`` or the cap; the facts it still does not
know are listed and, by default, leave the task. ``target=base`` unlearns what the model already
knows, optionally keeping only the questions it answers (``data.only_known``). Both decide what a
model knows with one function (:func:`measure_knowledge`) and drop what it does not in one place
(:func:`keep_known`). Fine-tuned models are cached on disk under a hash of everything that shaped
them (the gate's settings too), with the gate's record beside the weights, so a sweep builds each
once.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)

from benchmarks.cache import atomic_dir, cached_json, fingerprint
from benchmarks.data.records import DataError, QARecord, UnlearningData
from benchmarks.data.split import paraphrases_in
from benchmarks.evaluation.evaluate import eval_items, evaluate_model
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.metrics import rougeL_recall
from benchmarks.evaluation.privacy import auc, forget_vs_holdout_scores
from benchmarks.evaluation.selection import probe
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
    eval_cfg: Any,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, Path, dict[str, Any] | None]:
    """``base`` fine-tuned on ``records``, from the cache when the same inputs built it before,
    and the knowledge gate's record (None: ``target.gate.enabled=false``, the recipe alone). The
    gate measures knowledge as ``eval_cfg`` evaluates (answer length, leak test)."""
    train_cfg = OmegaConf.to_container(target_cfg.train, resolve=True)
    gated = bool(target_cfg.gate.enabled)
    parts = [model_key, kind, train_cfg, seed, prompter.system_prompt, [asdict(r) for r in records]]
    if gated:  # an ungated target keeps the key it had before the gate existed
        parts.append(gate_key(target_cfg.gate, eval_cfg))
    path = cache / "targets" / f"{kind}-{fingerprint(*parts)}"
    if (path / "config.json").exists() and (not gated or (path / GATE_FILE).exists()):
        log.info("Using cached %s model %s", kind, path)
        model = AutoModelForCausalLM.from_pretrained(path).to(base.device).eval()
        record = json.loads((path / GATE_FILE).read_text("utf-8")) if gated else None
        return model, path, record
    pairs = teaching_pairs(records, tokenizer, prompter, target_cfg.train_paraphrases)
    record = None
    if gated:
        measured = [r for r in records if r.role not in UNGATED]
        gate = KnowledgeGate(
            measure=lambda model: measure_knowledge(
                model, tokenizer, measured, eval_cfg, prompter, desc=f"{kind} gate: probe"
            ),
            min_share=target_cfg.gate.min_known_share,
            every=target_cfg.gate.check_every,
            label=kind,
        )
        model = train_gated(base, tokenizer, pairs, target_cfg, gate, seed=seed, phase=kind,
                            log_fn=log_fn)  # fmt: skip
        record = gate.record()
    else:
        model, _ = train(
            base, tokenizer, pairs, [], nll_loss, target_cfg.train, seed=seed, phase=kind,
            log_fn=log_fn,
        )  # fmt: skip
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        if record is not None:
            (tmp / GATE_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False), "utf-8")
    return model, path, record


# -- what a model knows ------------------------------------------------------------------------

#: Taught roles the gate does not wait for: no view asks them (they train methods' retain terms).
UNGATED = ("retain",)
#: Roles ``data.only_known`` leaves whatever the base model knows: retain trains, holdout is MIA's.
NOT_FILTERED = ("retain", "holdout")
#: The gate's record beside a fine-tuned model's weights.
GATE_FILE = "gate.json"
#: Bumped when what the gate measures or records changes, so older gated targets are built anew.
GATE_VERSION = 1


@dataclass(frozen=True)
class Knowledge:
    """Which of the facts asked a model knows. A fact (a record) is known when the evaluation's
    leak test finds its gold answer in the greedy answer to its question and to each of its dev
    paraphrases (never a test one): what the forget leak rate counts, so a known fact is one whose
    forgetting the evaluation can see. ``splits``: per role, the facts asked (``n``), known, their
    share and the mean ROUGE-L recall over the wordings asked; ``unknown``: each fact not known,
    with the wording it missed and the model's answer to it."""

    splits: dict[str, dict[str, Any]]
    unknown: list[dict[str, str]] = field(default_factory=list)

    @property
    def unknown_ids(self) -> set[str]:
        return {fact["id"] for fact in self.unknown}

    def short_of(self, share: float) -> dict[str, dict[str, Any]]:
        """The splits whose known share is below ``share``."""
        return {role: s for role, s in self.splits.items() if s["share"] < share}

    def summary(self) -> str:
        """``forget 9/10, hard_retain 5/5``: known of asked, per split."""
        return ", ".join(f"{role} {s['known']}/{s['n']}" for role, s in self.splits.items())


def measure_knowledge(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[QARecord],
    eval_cfg: Any,
    prompter: Prompter,
    desc: str = "knowledge: probe",
) -> Knowledge:
    """What ``model`` knows of ``records``, asked as the evaluation asks (greedy answers of
    ``eval.max_new_tokens``, the ``eval.leak`` test): the one definition the knowledge gate and
    ``data.only_known`` share."""
    asked = [(r, q) for r in records for q in (r.question, *paraphrases_in(r, "dev"))]
    texts, leaks = probe(
        model,
        tokenizer,
        [prompter(tokenizer, question) for _, question in asked],
        [record.answer for record, _ in asked],
        LeakTest.from_config(eval_cfg.leak),
        max_new_tokens=eval_cfg.max_new_tokens,
        batch_size=eval_cfg.batch_size,
        desc=desc,
    )
    missed: dict[str, dict[str, str]] = {}
    recalls: dict[str, list[float]] = defaultdict(list)
    for (record, question), text, leak in zip(asked, texts, leaks, strict=True):
        recalls[record.role].append(rougeL_recall(record.answer, text))
        if not leak and record.id not in missed:
            missed[record.id] = {
                "id": record.id,
                "role": record.role,
                "question": record.question,
                "answer": record.answer,
                "asked": question,
                "generation": text,
            }
    splits = {}
    for role in dict.fromkeys(r.role for r in records):
        members = [r for r in records if r.role == role]
        known = sum(r.id not in missed for r in members)
        splits[role] = {
            "n": len(members),
            "known": known,
            "share": known / len(members),
            "rougeL_recall": float(np.mean(recalls[role])),
        }
    return Knowledge(splits, list(missed.values()))


def keep_known(data: UnlearningData, knowledge: Knowledge, fix: str) -> UnlearningData:
    """The task without the facts the model does not know: the one place they leave it, so that
    methods, the evaluation, the suite families, the report and the analysis all see the same
    facts, and the dev/test halves (benchmarks/data/split.py) are dealt on what stays for methods
    and evaluation alike. ``fix`` says what to do when no forget fact is left."""
    unknown = knowledge.unknown_ids
    records = [r for r in data.records if r.id not in unknown]
    if not any(r.role == "forget" for r in records):
        raise DataError(
            f"the model knows none of the {len(data.forget)} forget facts of {data.name!r}: "
            f"nothing to unlearn. {fix}"
        )
    return data.with_records(records)


def unknown_per_view(
    data: UnlearningData, knowledge: Knowledge, views: Sequence[str]
) -> dict[str, int]:
    """How many questions of each view ask a fact the model does not know, as ``data`` (the whole
    task) deals the views: left out of the view's ``n`` when they leave the task, else among it."""
    unknown = knowledge.unknown_ids
    counts = dict.fromkeys(views, 0)
    for item in eval_items(data, tuple(views)):
        counts[item.view] += item.record.id in unknown
    return counts


def with_unknown_counts(
    metrics: dict[str, dict[str, float]], target_info: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Each view's metrics with ``n_unknown`` beside ``n`` where the target's knowledge was
    measured (``target_info["knowledge"]``), so that every table shows what the view left out."""
    counts = (target_info.get("knowledge") or {}).get("n_unknown") or {}
    merged = dict(metrics)
    for view, count in counts.items():
        if view in metrics or count:
            merged[view] = {"n": 0, **metrics.get(view, {}), "n_unknown": count}
    return merged


# -- the knowledge gate ------------------------------------------------------------------------


@dataclass
class KnowledgeGate(TrainerCallback):
    """Check what the model in training knows (``measure``) and stop once every measured split's
    known share reaches ``min_share``. It always checks the model a training ends with; while
    ``active`` also each epoch, or every ``every`` optimizer steps. Like the stopping rule
    (:class:`benchmarks.evaluation.selection.StopWhenForgotten`, which trains until nothing
    leaks where this trains until enough does), one instance follows several trainings, whose
    epochs and steps add up."""

    measure: Callable[[Any], Knowledge]
    min_share: float
    every: int | None = None
    label: str = "target"
    active: bool = False
    epochs: float = 0.0
    steps: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    last: Knowledge | None = None
    recipe_epochs: float | None = None
    _checked_at: int | None = field(default=None, repr=False)

    @property
    def reached(self) -> bool:
        return self.last is not None and not self.last.short_of(self.min_share)

    def check(self, model: Any, state: Any) -> bool:
        """Measure, record and log; whether the gate is reached."""
        self.last = self.measure(model)
        self._checked_at = state.global_step
        epochs = round(self.epochs + (state.epoch or 0.0), 3)
        known = {role: s["known"] for role, s in self.last.splits.items()}
        self.checks.append(
            {"epochs": epochs, "steps": self.steps + state.global_step, "known": known}
        )
        log.info("%s gate at epoch %.2f: knows %s", self.label, epochs, self.last.summary())
        return self.reached

    def on_train_begin(self, args, state, control, **kwargs):
        self._checked_at = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.active and self.every and state.global_step % self.every == 0:
            control.should_training_stop |= self.check(model, state)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.active and self.every is None and self._checked_at != state.global_step:
            control.should_training_stop |= self.check(model, state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._checked_at != state.global_step:
            self.check(model, state)
        self.epochs += state.epoch or 0.0
        self.steps += state.global_step
        if self.recipe_epochs is None:
            self.recipe_epochs = self.epochs

    def record(self) -> dict[str, Any]:
        """What the target's cache and ``results.json`` (``target.gate``) keep."""
        assert self.last is not None, "the gate records after a training"
        return {
            "epochs": round(self.epochs, 3),
            "recipe_epochs": self.recipe_epochs,
            "steps": self.steps,
            "reached": self.reached,
            "checks": self.checks,
            "knowledge": asdict(self.last),
        }


def train_gated(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[Pair],
    target_cfg: Any,
    gate: KnowledgeGate,
    *,
    seed: int,
    phase: str,
    log_fn: Callable[[dict[str, float]], None] | None = None,
) -> PreTrainedModel:
    """The recipe (``target.train``) in full, then, while the gate is not reached, up to
    ``target.gate.max_extra_epochs`` more, checked each epoch. The recipe trains exactly as it
    would without the gate; the extra epochs are a second training with the recipe's settings:
    the learning rate restarts at its peak and decays over the extra epochs (a warm restart),
    and the optimizer's moments start anew."""
    model, _ = train(
        base, tokenizer, pairs, [], nll_loss, target_cfg.train, seed=seed, phase=phase,
        log_fn=log_fn, callbacks=[gate],
    )  # fmt: skip
    extra = target_cfg.gate.max_extra_epochs
    if gate.reached or not extra:
        return model
    gate.active = True
    more = OmegaConf.merge(target_cfg.train, {"epochs": extra, "max_steps": None})
    model, _ = train(
        model, tokenizer, pairs, [], nll_loss, more, seed=seed, phase=f"{phase}/gate",
        log_fn=log_fn, callbacks=[gate],
    )  # fmt: skip
    return model


def gate_key(gate_cfg: Any, eval_cfg: Any) -> dict[str, Any]:
    """What shapes a gated target beyond its recipe: when the gate stops, and how it measures
    (the evaluation's answer length and leak test). ``on_fail`` and ``known_only`` act after
    training, so changing them reuses the target."""
    return {
        "version": GATE_VERSION,
        "min_known_share": gate_cfg.min_known_share,
        "max_extra_epochs": gate_cfg.max_extra_epochs,
        "check_every": gate_cfg.check_every,
        "max_new_tokens": eval_cfg.max_new_tokens,
        "leak": OmegaConf.to_container(eval_cfg.leak, resolve=True),
    }


class KnowledgeGateError(RuntimeError):
    """The target knows less of a taught split than ``target.gate.min_known_share`` at the cap."""


#: Unknown facts a log message names one by one; results.json lists them all.
LISTED = 20


def _unknown_lines(knowledge: Knowledge) -> str:
    lines = [
        f"  [{f['role']}] {f['id']}: {f['asked']!r} -> {f['answer']!r} (said {f['generation']!r})"
        for f in knowledge.unknown[:LISTED]
    ]
    more = len(knowledge.unknown) - LISTED
    return "\n".join(lines + ([f"  ... and {more} more (results.json: target.knowledge)"]
                              if more > 0 else []))  # fmt: skip


def gate_verdict(
    record: dict[str, Any],
    gate_cfg: Any,
    data: UnlearningData,
    views: Sequence[str],
    source: Path,
) -> tuple[dict[str, Any], Knowledge]:
    """The target's ``gate`` and ``knowledge`` entries of ``results.json`` from the gate's record
    (kept in ``source``, the target's directory); a loud warning naming the facts it does not know,
    and per ``gate.on_fail`` an error or a second warning when a split stays below
    ``gate.min_known_share``."""
    knowledge = Knowledge(**record["knowledge"])
    short = knowledge.short_of(gate_cfg.min_known_share)
    gate = {k: v for k, v in record.items() if k != "knowledge"}
    gate["min_known_share"] = gate_cfg.min_known_share
    entry = {
        **asdict(knowledge),
        "known_only": bool(gate_cfg.known_only),
        "n_unknown": unknown_per_view(data, knowledge, views),
    }
    if knowledge.unknown:
        where = (
            "they leave the task (target.gate.known_only=true): methods and every view skip them, "
            "each view's n_unknown counts them"
            if gate_cfg.known_only
            else "they stay in the task (target.gate.known_only=false), counted in each view's "
            "n_unknown"
        )
        log.warning(
            "THE TARGET DOES NOT KNOW %d of the %d facts it was taught and is asked (after %s "
            "epochs); %s:\n%s",
            len(knowledge.unknown),
            sum(s["n"] for s in knowledge.splits.values()),
            record["epochs"],
            where,
            _unknown_lines(knowledge),
        )
    if short:
        below = ", ".join(
            f"{role} {s['known']}/{s['n']} ({s['share']:.0%})" for role, s in short.items()
        )
        message = (
            f"the target knows less than target.gate.min_known_share="
            f"{gate_cfg.min_known_share} of {below} after {record['epochs']} epochs, the cap "
            f"(recipe {record['recipe_epochs']} + target.gate.max_extra_epochs="
            f"{gate_cfg.max_extra_epochs}); the unlearning of facts it never knew measures "
            "nothing. Raise target.gate.max_extra_epochs or target.train.lr, check the "
            f"unknown facts' answers (the log; {source / GATE_FILE}), or lower "
            "target.gate.min_known_share"
        )
        if gate_cfg.on_fail == "error":
            raise KnowledgeGateError(f"{message}; target.gate.on_fail=warn goes on regardless.")
        gate["warning"] = message
        log.warning("KNOWLEDGE GATE FAILED (target.gate.on_fail=warn, going on): %s", message)
    return {"gate": gate, "knowledge": entry}, knowledge


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
    """The target model, the task it is unlearned and evaluated on (without the facts it does
    not know: ``data.only_known`` for the base model, ``target.gate.known_only`` for a fine-tuned
    one), and where it came from, with what it knows."""
    if cfg.target.kind == "base":
        if not cfg.data.get("only_known"):
            return base, data, {"kind": "base"}
        asked = [r for r in data.records if r.role not in NOT_FILTERED]
        knowledge = measure_knowledge(
            base, tokenizer, asked, cfg.eval, prompter, desc="only_known: probe"
        )
        info = {
            "kind": "base",
            "knowledge": {
                **asdict(knowledge),
                "known_only": True,
                "n_unknown": unknown_per_view(data, knowledge, cfg.eval.views),
            },
        }
        kept = keep_known(
            data, knowledge, "Use target=finetune so the model learns the facts first."
        )
        log.info(
            "only_known kept %d of %d evaluated questions",
            len(asked) - len(knowledge.unknown),
            len(asked),
        )
        return base, kept, info
    if cfg.target.kind != "finetune":
        raise ValueError(f"target.kind={cfg.target.kind!r}; choose base or finetune")
    model, path, record = finetuned(
        base,
        tokenizer,
        taught(data),
        cfg.target,
        cache=cache,
        model_key=model_key(cfg),
        seed=cfg.target.seed,
        prompter=prompter,
        kind="target",
        eval_cfg=cfg.eval,
        log_fn=log_fn,
    )
    info: dict[str, Any] = {"kind": "finetune", "path": str(path)}
    if record is None:
        return model, data, info
    entries, knowledge = gate_verdict(record, cfg.target.gate, data, cfg.eval.views, path)
    info |= entries
    if cfg.target.gate.known_only and knowledge.unknown:
        data = keep_known(
            data,
            knowledge,
            "Raise target.gate.max_extra_epochs or target.train.lr, or set "
            "target.gate.known_only=false to evaluate the facts it does not know.",
        )
    return model, data, info


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


#: Bumped when what a cached evaluation holds changes (2: each view's ``n``; the reference's MIA
#: scores per question, which privleak's bootstrap interval resamples), so older files are
#: computed anew rather than read.
EVAL_VERSION = 2


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
        EVAL_VERSION,
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
            scores = forget_vs_holdout_scores(
                model, tokenizer, data, prompter, k=cfg.eval.privacy.k,
                batch_size=cfg.eval.batch_size,
            )  # fmt: skip
            result["auc"] = {name: auc(*pair) for name, pair in scores.items()}
            result["mia_scores"] = scores
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
    model'), by the target's procedure (its recipe and knowledge gate, whose verdict nothing
    reads: the reference is not unlearned), and where it is cached."""
    base, tokenizer = load_model(cfg.model, cache, cfg.device)
    model, path, _ = finetuned(
        base,
        tokenizer,
        [r for r in taught(data) if r.role != "forget"],
        cfg.target,
        cache=cache,
        model_key=model_key(cfg),
        seed=cfg.target.seed,
        prompter=prompter,
        kind="reference",
        eval_cfg=cfg.eval,
        log_fn=log_fn,
    )
    return model, path
