"""Selection: everything that chooses (when to stop training, which hyperparameters win) reads the
evaluation only through :data:`SELECTION_VIEWS`.

Two pieces use it: the one early-stopping rule of every training method
(:class:`StopWhenForgotten`, ``method.stop_when_forgotten``) and the tuner's objective
(:func:`objective`, returned by ``run.py`` to Hydra's Optuna sweeper). Both take their views from
:func:`selected`, which refuses a view outside :data:`SELECTION_VIEWS`, so a comparison can be
reported on views that no choice has looked at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase, TrainerCallback

from benchmarks.data.records import UnlearningData
from benchmarks.data.split import SPLIT_VIEWS, view_name
from benchmarks.evaluation.criteria import harmonic_mean
from benchmarks.evaluation.evaluate import eval_items
from benchmarks.evaluation.generation import generate
from benchmarks.evaluation.judges import unique_ngram_ratio
from benchmarks.evaluation.leak import LeakTest
from benchmarks.prompting import Prompter

#: The views selection may read: the forget set (every method trains on it and may probe it) and
#: the dev half of every split view (benchmarks/data/split.py). The test halves, which every
#: reported table reads, and the whole split views (which contain them) are not here. Each use
#: below resolves a view through :func:`selected`, which accepts ``<view>`` or ``<view>_dev``.
SELECTION_VIEWS: tuple[str, ...] = ("forget", *(view_name(v, "dev") for v in SPLIT_VIEWS))
#: The objective's two sides, as base view names (resolved through :func:`selected`).
FORGET_SIDE = ("forget", "forget_paraphrased")
RETAIN_SIDE = ("hard_retain", "general_retain")
#: Retain views the objective reads where they were evaluated: only some data has them
#: (answer-sharing retain: wpu_mini, wpu_real), and a method that suppresses a forget answer
#: everywhere must lose there too.
OPTIONAL_RETAIN_SIDE = ("answer_sharing_retain",)
#: What Optuna gets from a failed job: below every objective value (they are in [0, 1]).
WORST = -math.inf


class SelectionError(ValueError):
    """Selection code asked for a view it must not read."""


def selected(base: str) -> str:
    """The selection view standing for ``base`` (``base`` itself, or its dev half); a view outside
    :data:`SELECTION_VIEWS` (a test view) raises."""
    for view in (base, f"{base}_dev"):
        if view in SELECTION_VIEWS:
            return view
    raise SelectionError(
        f"selection may not read view {base!r}: it reads only {list(SELECTION_VIEWS)} "
        "(SELECTION_VIEWS in benchmarks/evaluation/selection.py); reported tables read the rest"
    )


def probe_views() -> tuple[str, ...]:
    """The forget-side views the stopping rule probes."""
    return tuple(selected(view) for view in FORGET_SIDE)


# -- the stopping rule -----------------------------------------------------------------------


def probe(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    golds: list[str],
    leak_test: LeakTest,
    *,
    max_new_tokens: int,
    batch_size: int,
    desc: str,
) -> tuple[list[str], list[bool]]:
    """Greedy answers to ``prompts`` as the evaluation generates them, and whether each states its
    gold answer under ``leak_test``: what the stopping rule counts down (a method trains until
    nothing leaks) and the target's knowledge gate counts up (benchmarks/target.py)."""
    answers = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc
    )
    texts = [a[0] for a in answers]
    return texts, leak_test.leaks(golds, texts)


@dataclass
class StopWhenForgotten(TrainerCallback):
    """Every ``every`` optimizer steps, answer the probe questions greedily (the evaluation's answer
    length) and stop training when the evaluation's leak test finds none of the gold answers.

    The training budget (epochs or ``max_steps``) is the cap. Disabled, it only counts steps, so
    that every job records how long it trained. One instance may follow several trainings (UnSTAR's
    iterations): steps and caps add up.
    """

    tokenizer: PreTrainedTokenizerBase
    prompts: list[str]
    golds: list[str]
    leak_test: LeakTest
    every: int
    enabled: bool = True
    max_new_tokens: int = 32
    batch_size: int = 16
    steps: int = 0
    cap: int = 0
    checks: int = 0
    stopped_early: bool = False
    leaking_at_last_check: int | None = None
    fired: bool = field(default=False, repr=False)

    def leaking(self, model: Any) -> int:
        """How many probe questions the model still answers with the gold answer."""
        _, leaks = probe(
            model,
            self.tokenizer,
            self.prompts,
            self.golds,
            self.leak_test,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            desc="stopping rule: probe",
        )
        return sum(leaks)

    def on_train_begin(self, args, state, control, **kwargs):
        self.fired = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.enabled or state.global_step % self.every:
            return
        self.checks += 1
        self.leaking_at_last_check = self.leaking(model)
        if self.leaking_at_last_check == 0:
            self.fired = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.steps += state.global_step
        self.cap += state.max_steps
        self.stopped_early |= self.fired and state.global_step < state.max_steps

    def record(self) -> dict[str, Any]:
        """What results.json keeps (``method_metrics.stopping``)."""
        return {
            "rule": "stop_when_forgotten" if self.enabled else "off",
            "check_every": self.every if self.enabled else None,
            "probe_views": list(probe_views()),
            "probed": len(self.prompts) if self.enabled else 0,
            "steps": self.steps,
            "cap": self.cap,
            "stopped_early": self.stopped_early,
            "checks": self.checks,
            "leaking_at_last_check": self.leaking_at_last_check,
        }


def stopping_rule(
    method_cfg: Any,
    data: UnlearningData,
    tokenizer: PreTrainedTokenizerBase,
    prompter: Prompter,
    eval_cfg: Any,
    *,
    leak_test: LeakTest | None = None,
) -> StopWhenForgotten:
    """The rule a method's config asks for, probing the forget questions and their selection
    paraphrases with the evaluation's leak test (``eval_cfg.leak``) and answer length."""
    if not method_cfg.stop_when_forgotten:  # it only counts steps
        return StopWhenForgotten(tokenizer, [], [], LeakTest(), method_cfg.stop_check_every, False)
    if eval_cfg is None:
        raise ValueError(
            "method.stop_when_forgotten probes with the evaluation's leak test and answer length: "
            "pass the job's eval config (JobContext.eval_cfg)"
        )
    items = eval_items(data, probe_views())
    return StopWhenForgotten(
        tokenizer=tokenizer,
        prompts=[prompter(tokenizer, item.question) for item in items],
        golds=[item.record.answer for item in items],
        leak_test=leak_test or LeakTest.from_config(eval_cfg.leak),
        every=method_cfg.stop_check_every,
        max_new_tokens=eval_cfg.max_new_tokens,
        batch_size=eval_cfg.batch_size,
    )


# -- the tuning objective --------------------------------------------------------------------


def fluency(text: str) -> float:
    """0 for an empty answer, else its share of distinct word 4-grams (1 when too short to repeat):
    an answer that collapsed into nothing or into a loop is not an unlearned one."""
    words = text.lower().split()
    return unique_ngram_ratio(words) if words else 0.0


def objective(
    target: Mapping[str, Mapping[str, float]],
    unlearned: Mapping[str, Mapping[str, float]],
    rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The tuner's scalar, from the selection views only: the harmonic mean of

    - forget efficacy E = 1 − mean leak rate over the forget questions and their paraphrases;
    - retain utility U = mean over hard and general retain, and answer-sharing retain where both
      models were evaluated on it, of min(1, ROUGE-L / target's ROUGE-L) (1 when the target
      scores 0 there: nothing to keep);
    - fluency F = mean :func:`fluency` of the unlearned model's forget-side answers.

    Harmonic: each must be good, so neither collapse (E = 1, U ≈ 0) nor leaving the model alone
    (U = 1, E ≈ 0) scores; F catches forgetting by emitting nothing or loops, which the leak test
    and the retain ROUGE-L do not see. ``unlearned`` and ``target`` are per-view metric means,
    ``rows`` the unlearned model's per-question rows (with their generations).
    """
    forget, retain = probe_views(), tuple(selected(view) for view in RETAIN_SIDE)
    retain += tuple(
        view
        for view in map(selected, OPTIONAL_RETAIN_SIDE)
        if all("rougeL_recall" in m.get(view, {}) for m in (target, unlearned))
    )
    needed = [(unlearned, v, "leak_rate") for v in forget] + [
        (m, v, "rougeL_recall") for v in retain for m in (unlearned, target)
    ]
    missing = sorted({v for m, v, k in needed if k not in m.get(v, {})})
    if missing:
        raise SelectionError(
            f"the objective needs leak_rate and rougeL_recall on {missing}; evaluate them "
            "(eval.views, eval.metrics: eval=tune does)"
        )
    efficacy = 1 - sum(unlearned[v]["leak_rate"] for v in forget) / len(forget)
    ratios = [
        1.0
        if target[v]["rougeL_recall"] <= 0
        else min(1.0, unlearned[v]["rougeL_recall"] / target[v]["rougeL_recall"])
        for v in retain
    ]
    utility = sum(ratios) / len(ratios)
    answers = [row.get("generation", "") for row in rows if row["view"] in forget]
    fluent = sum(fluency(a) for a in answers) / len(answers) if answers else 0.0
    value = harmonic_mean([efficacy, utility, fluent])
    return {
        "objective": float(value if value is not None else 0.0),
        "forget_efficacy": efficacy,
        "retain_utility": utility,
        "fluency": fluent,
        "views": [*forget, *retain],
    }
