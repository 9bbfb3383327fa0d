"""The evaluation suite beyond the per-view means: attacks (and the worst case over them),
membership inference, TOFU's metrics, fine-grained retention, the five WPU criteria, and probes
that tell removal from obfuscation: multiple choice, the outcome of each forget answer (leak,
refusal or fabrication) and the echo of the method's own trained wrong answers (``eval.suite``
selects them).

Each family runs for the target and the unlearned model, starting from the rows
:func:`~benchmarks.evaluation.evaluate.evaluate_model` already produced: the judge reads those
generations, attacks that only change the prompt reuse any answer already generated, and each
family adds only the model passes it needs (an MIA scoring pass, an attack's own prompts). The
retain-only reference model (TOFU forget quality, privleak) and the target's suite results are
cached like the target itself, so a sweep computes them once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.cache import cached_json
from benchmarks.data.records import UnlearningData
from benchmarks.data.split import SPLIT_VIEWS, records_in, reported, view_name
from benchmarks.evaluation import metrics
from benchmarks.evaluation.attacks import ATTACKS, Victim
from benchmarks.evaluation.criteria import criteria, submetrics
from benchmarks.evaluation.evaluate import METRICS
from benchmarks.evaluation.fine_grained import fine_grained
from benchmarks.evaluation.generation import answer_logprobs, generate
from benchmarks.evaluation.judges import JUDGES, Judge, Judged, JudgeEnv, JudgeError, build_judge
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.privacy import MiaScores, forget_vs_holdout_scores, mia_results
from benchmarks.evaluation.specs import criteria_inputs
from benchmarks.evaluation.tofu import TOFU_UTILITY, forget_truth_ratio, tofu_metrics
from benchmarks.prompting import Prompter
from benchmarks.registry import Registry

log = logging.getLogger(__name__)

#: What the suite times its phases with: called with a phase name, it returns the context to
#: run the phase in (``benchmarks.job.Timer`` is one).
PhaseTimer = Callable[[str], AbstractContextManager[None]]

#: Families run in this order whatever order ``eval.suite`` lists them in: criteria read the
#: attack rows, the outcome and echo probes the refusals the criteria's judge marked.
ORDER = (
    "attacks", "privacy", "tofu", "fine_grained", "multiple_choice", "criteria", "outcomes", "echo",
)  # fmt: skip

#: Bumped when what the families report changes (2: attack leak rates never below the greedy
#: ones, ``robustness``; 3: relearning on related facts, the outcome and echo probes; 4: TOFU's
#: truth ratio on the paraphrased answer, its 9-value model utility, ``forget_truth_ratio``; 5:
#: the local judge scores fluency under the base model on a calibrated scale, with no bonus for
#: refusals; 6: bootstrap intervals and counts for the MIA AUCs and privleak, ``criteria_notes``;
#: 7: the families read the test halves of the split views), so that a target's suite results
#: cached by older code, which lack the new keys or hold old scores, are computed anew rather
#: than read.
RESULTS_VERSION = 7

#: The views and per-question metrics each family reads from ``evaluate_model``'s rows. A split
#: view (benchmarks/data/split.py) is read in its test half where ``eval.views`` has it, else whole.
NEEDS: dict[str, tuple[set[str], set[str]]] = {
    "criteria": criteria_inputs(),  # the metric spec registry's: the criteria's definition
    "tofu": (
        {"forget", *(view for view, _ in TOFU_UTILITY.values())},
        {"answer_prob", "rougeL_recall", "truth_preference"},
    ),
    "fine_grained": ({"forget", "forget_facts_retained"}, {"rougeL_recall", "leak_rate"}),
    "outcomes": ({"forget"}, {"leak_rate"}),
    "echo": ({"forget_paraphrased"}, {"leak_rate"}),
}


@dataclass
class ModelRun:
    """One evaluated model and its rows; the suite adds judge scores and attack rows to them."""

    label: str
    prompter: Prompter
    metrics: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    model: PreTrainedModel | None = None  # None: the prepared target, reloaded when needed
    #: The wrong answers the method trained this model to give, by forget record id
    #: (``benchmarks.methods.Unlearned.wrong_answers``; empty for the target): the echo probe's.
    wrong_answers: dict[str, list[str]] = field(default_factory=dict)


def check_suite(eval_cfg: Any) -> None:
    """Fail before any model work if ``eval`` selects a family its views or metrics cannot feed."""
    unknown = set(eval_cfg.suite) - set(ORDER)
    if unknown:
        raise ValueError(f"eval.suite has unknown {sorted(unknown)}; choose from {list(ORDER)}")
    for name in eval_cfg.attacks if "attacks" in eval_cfg.suite else ():
        ATTACKS.get(name)
    if "criteria" in eval_cfg.suite:
        JUDGES.get(eval_cfg.judge.kind)
    for family in eval_cfg.suite:
        views, wanted = NEEDS.get(family, (set(), set()))
        if family == "tofu":
            views = views | set(eval_cfg.tofu.utility_views)
        evaluated = set(eval_cfg.views)
        missing = sorted(
            view_name(v, "test") if v in SPLIT_VIEWS else v
            for v in views
            if reported(v, evaluated) not in evaluated
        ) + sorted(wanted - set(eval_cfg.metrics))
        if missing:
            raise ValueError(
                f"eval.suite has {family!r}, which reads {missing} from the evaluation; add them "
                f"to eval.views / eval.metrics (metrics: {list(METRICS)}) or drop {family!r}"
            )


Family = Callable[["Suite", ModelRun], dict[str, Any]]
FAMILIES: Registry[Family] = Registry("eval suite family")


class Suite:
    """The shared state of one job's suite: data, the original model, the judge, the reference."""

    def __init__(
        self,
        eval_cfg: Any,
        *,
        data: UnlearningData,
        tokenizer: PreTrainedTokenizerBase,
        runs: dict[str, ModelRun],
        load_original: Callable[[], PreTrainedModel],
        load_base: Callable[[], PreTrainedModel],
        reference: dict[str, Any] | None,
        timer: PhaseTimer,
    ) -> None:
        self.eval, self.data, self.tokenizer, self.runs = eval_cfg, data, tokenizer, runs
        self.load_original, self.load_base = load_original, load_base
        self.reference, self.timer = reference, timer
        self.families = [f for f in ORDER if f in self.eval.suite]
        self.errors: dict[str, str] = {}
        self._answers: dict[str, dict[str, str]] = {}

    # -- shared resources, built on first use --

    @cached_property
    def original(self) -> PreTrainedModel:
        """The target as prepared, before unlearning."""
        return self.load_original()

    @cached_property
    def base(self) -> PreTrainedModel:
        """The model before the target fine-tune: the judge's fluency model."""
        return self.load_base()

    def model(self, run: ModelRun) -> PreTrainedModel:
        return run.model if run.model is not None else self.original

    @cached_property
    def judge(self) -> Judge:
        env = JudgeEnv(
            leak_test=LeakTest.from_config(self.eval.leak),
            tokenizer=self.tokenizer,
            fluency_model=lambda: self.base,
            prompter=self.runs["target"].prompter,
            batch_size=self.eval.batch_size,
        )
        return build_judge(self.eval.judge, env)

    def answer(self, run: ModelRun, prompts: list[str]) -> list[str]:
        """Greedy answers as the evaluation generates them, reusing any already generated."""
        known = self._answers.get(run.label)
        if known is None:
            known = {
                run.prompter(self.tokenizer, row["question"]): row["generation"]
                for row in run.rows
                if "generation" in row and not row["view"].startswith("attack/")
            }
            self._answers[run.label] = known
        missing = sorted({p for p in prompts if p not in known})
        if missing:
            fresh = generate(
                self.model(run),
                self.tokenizer,
                missing,
                max_new_tokens=self.eval.max_new_tokens,
                batch_size=self.eval.batch_size,
                desc=f"suite {run.label}: generate",
            )
            known.update(zip(missing, (f[0] for f in fresh), strict=True))
        return [known[p] for p in prompts]

    def mia(self, model: PreTrainedModel, prompter: Prompter) -> MiaScores:
        return forget_vs_holdout_scores(
            model,
            self.tokenizer,
            self.data,
            prompter,
            k=self.eval.privacy.k,
            batch_size=self.eval.batch_size,
        )

    # -- running --

    def evaluate(self, run: ModelRun) -> dict[str, Any]:
        """Every selected family for one model: result key -> this model's value."""
        results: dict[str, Any] = {}
        for family in self.families:
            with self.timer(f"suite/{family}/{run.label}"):
                results.update(FAMILIES.get(family)(self, run))
        return results


def run_suite(
    eval_cfg: Any,
    *,
    data: UnlearningData,
    tokenizer: PreTrainedTokenizerBase,
    target: ModelRun,
    unlearned: ModelRun,
    load_original: Callable[[], PreTrainedModel],
    load_base: Callable[[], PreTrainedModel],
    reference: dict[str, Any] | None,
    timer: PhaseTimer,
    target_cache: Path | None = None,
) -> dict[str, Any]:
    """The suite's results keys (``criteria``, ``attacks``, ...), each ``{model label: value}``.

    ``reference`` holds the retain-only model's forget truth ratios and MIA AUCs (built by the
    target layer, :func:`benchmarks.target.reference_results`). The target's results are the same
    for every method of a sweep: with ``target_cache`` they are computed once. A judge failure
    does not lose results: the rows keep the scores given so far, the affected criteria are None,
    and the error is recorded under ``eval_errors``.
    """
    runs = {"target": target, "unlearned": unlearned}
    suite = Suite(
        eval_cfg,
        data=data,
        tokenizer=tokenizer,
        runs=runs,
        load_original=load_original,
        load_base=load_base,
        reference=reference,
        timer=timer,
    )
    if not suite.families:
        return {}
    results: dict[str, dict[str, Any]] = defaultdict(dict)
    for run in runs.values():
        if run is target and target_cache is not None:
            saved, _ = cached_json(
                target_cache.with_name(f"{target_cache.stem}-v{RESULTS_VERSION}.json"),
                lambda run=run: {"results": suite.evaluate(run), "rows": run.rows},
                keep=lambda _: not suite.errors,
            )
            run.rows[:] = saved["rows"]
            outcome = saved["results"]
        else:
            outcome = suite.evaluate(run)
        for key, value in outcome.items():
            results[key][run.label] = value
    if reference and "tofu" in suite.families:
        ratios = reference["forget_truth_ratios"]
        results["tofu"]["reference"] = {
            "forget_truth_ratio": {"forget": forget_truth_ratio(ratios) if ratios else None}
        }
    if reference and "auc" in reference:
        results["privacy"]["reference"] = {"auc": reference["auc"]}
    if suite.errors:
        results["eval_errors"] = suite.errors
    return dict(results)


# -- families ----------------------------------------------------------------------------------


@FAMILIES.register("attacks")
def attacks_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """Leak rates and ROUGE-L recall under each configured attack (its rows join the
    generations), and the worst case over them (``robustness``)."""
    victim = Victim(
        model=suite.model(run),
        tokenizer=suite.tokenizer,
        prompter=run.prompter,
        answer=partial(suite.answer, run),
        max_new_tokens=suite.eval.max_new_tokens,
        batch_size=suite.eval.batch_size,
    )
    leak_test = LeakTest.from_config(suite.eval.leak)
    forget = suite.data.forget
    plain = suite.answer(run, [run.prompter(suite.tokenizer, r.question) for r in forget])
    greedy = dict(
        zip((r.id for r in forget), leak_test.leaks([r.answer for r in forget], plain), strict=True)
    )
    summary: dict[str, dict[str, Any]] = {}
    for name, attack_cfg in suite.eval.attacks.items():
        with suite.timer(f"suite/attack:{name}/{run.label}"):
            probes = ATTACKS.get(name)(victim, suite.data, attack_cfg)
        leaks = leak_test.leaks([p.record.answer for p in probes], [p.generation for p in probes])
        rows = [
            {
                "model": run.label,
                "view": f"attack/{name}",
                "id": p.record.id,
                "question": p.question,
                "answer": p.record.answer,
                "generation": p.generation,
                "rougeL_recall": metrics.rougeL_recall(p.record.answer, p.generation),
                "leak_rate": float(leak),  # this answer's own leak
                **({"setting": p.setting} if p.setting else {}),
            }
            for p, leak in zip(probes, leaks, strict=True)
        ]
        run.rows.extend(rows)
        summary[name] = _attack_summary(rows, greedy)
        for setting in dict.fromkeys(r["setting"] for r in rows if "setting" in r):
            chosen = [r for r in rows if r.get("setting") == setting]
            summary[name][setting] = _attack_summary(chosen, greedy)
    greedy_leak = _mean(greedy.values())
    robustness = {"greedy_leak_rate": greedy_leak, **worst_case(greedy_leak, summary)}
    return {"attacks": summary, "robustness": robustness}


def leak_summary(
    ids: Sequence[str], leaks: Sequence[bool], greedy: Mapping[str, bool]
) -> dict[str, float | None]:
    """An attack's leak over the questions it asked (``ids``, one per answer; ``greedy``: whether
    each question's plain greedy answer leaks). ``attacked_leak_rate``: the share of its answers
    that leak; ``greedy_leak_rate``: the share of its questions whose greedy answer leaks;
    ``leak_rate``: the share where the greedy answer or any attacked answer leaks. An attacker can
    always ask plainly too, so an attack never reports less leak than no attack (relearning or
    quantization that damage the model, a bad sample, must not hide a fact the model states)."""
    worst = {i: greedy[i] for i in ids}
    for i, leak in zip(ids, leaks, strict=True):
        worst[i] = worst[i] or leak
    return {
        "leak_rate": _mean(worst.values()),
        "attacked_leak_rate": _mean(leaks),
        "greedy_leak_rate": _mean(greedy[i] for i in worst),
    }


def _attack_summary(rows: list[dict[str, Any]], greedy: Mapping[str, bool]) -> dict[str, Any]:
    leaks = leak_summary([r["id"] for r in rows], [bool(r["leak_rate"]) for r in rows], greedy)
    return {**leaks, "rougeL_recall": _mean(r["rougeL_recall"] for r in rows), "n": len(rows)}


def worst_case(
    greedy_leak: float | None, attacks: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The highest leak rate of plain greedy answers and of every attack that ran, and its
    source: what an attacker with all of them gets out on the forget set."""
    candidates = {"greedy": greedy_leak} | {n: s["leak_rate"] for n, s in attacks.items()}
    known = {n: v for n, v in candidates.items() if v is not None}
    if not known:
        return {"worst_case_leak": None, "worst_case_attack": None}
    source = max(known, key=known.__getitem__)
    return {"worst_case_leak": known[source], "worst_case_attack": source}


@FAMILIES.register("privacy")
def privacy_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """MIA AUCs forget vs holdout and privleak against the retain-only reference, each with a
    95% percentile bootstrap interval over questions (fixed seed), the question counts, and a
    warning when they are few (:func:`benchmarks.evaluation.privacy.mia_results`)."""
    if not suite.data.with_role("holdout"):
        return {
            "privacy": {"skipped": "the data has no holdout records (questions never trained on)"}
        }
    scores = suite.mia(suite.model(run), run.prompter)
    reference = (suite.reference or {}).get("mia_scores")
    result = mia_results(scores, reference)
    if "warning" in result:
        log.warning("%s: %s", run.label, result["warning"])
    return {"privacy": result}


@FAMILIES.register("tofu")
def tofu_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """TOFU's forget truth ratio, forget quality against the retain-only reference and model
    utility (:mod:`benchmarks.evaluation.tofu`); a warning when forget quality has few questions."""
    reference = suite.reference["forget_truth_ratios"] if suite.reference else None
    result = tofu_metrics(run.rows, suite.eval.tofu.utility_views, reference)
    if "forget_quality_warning" in result:
        log.warning("%s: %s", run.label, result["forget_quality_warning"])
    return {"tofu": result}


@FAMILIES.register("fine_grained")
def fine_grained_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """Retention of the forgotten persons' other facts (only ``data.forget_set=forget_facts``
    has them)."""
    result = fine_grained(run.rows, suite.runs["target"].rows)
    return {"fine_grained": result or {"skipped": "no kept facts of forgotten persons in the data"}}


@FAMILIES.register("multiple_choice")
def multiple_choice_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """Multiple choice between the true answer and the record's perturbed (wrong) answers, per
    view: ``accuracy``, how often the true answer is the most likely option, and ``true_mass``,
    its share of the options' probability (``chance``: what a model that cannot tell them apart
    gets). Free generation can hide a fact that the model still recognises among options. It asks
    the forgotten facts and, for contrast, the test half of the hard-retain ones."""
    options = [
        (view, r, answer)
        for view, records in (
            ("forget", suite.data.forget),
            ("hard_retain_test", records_in(suite.data.with_role("hard_retain"), "test")),
        )
        for r in records
        if r.perturbed_answers
        for answer in (r.answer, *r.perturbed_answers)
    ]
    scores = answer_logprobs(
        suite.model(run),
        suite.tokenizer,
        [run.prompter(suite.tokenizer, r.question) for _, r, _ in options],
        [answer for *_, answer in options],
        batch_size=suite.eval.batch_size,
        desc=f"suite {run.label}: multiple choice",
    )
    by_question: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for (view, record, _), score in zip(options, scores, strict=True):
        by_question[view, record.id].append(score)
    picks: dict[str, list[tuple[bool, float, float]]] = defaultdict(list)
    for (view, _), (true_lp, *perturbed_lp) in by_question.items():
        picks[view].append(
            (*metrics.multiple_choice(true_lp, perturbed_lp), 1 / (1 + len(perturbed_lp)))
        )
    result = {
        view: {
            "accuracy": _mean(correct for correct, _, _ in chosen),
            "true_mass": _mean(mass for _, mass, _ in chosen),
            "chance": _mean(chance for *_, chance in chosen),
            "n": len(chosen),
        }
        for view, chosen in picks.items()
    }
    return {"multiple_choice": result or {"skipped": "no records with perturbed answers"}}


@FAMILIES.register("criteria")
def criteria_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """The five WPU criteria and their sub-metrics, after the judge has scored the rows, and how
    the judge scored (``judge``: the local judge's fluency scale); where a criterion is over the
    views the data has (model utility on TOFU, which has no general retain), ``criteria_notes``
    says which."""
    _judge_rows(suite, run)
    attacked = {r["view"].split("/", 1)[1] for r in run.rows if r["view"].startswith("attack/")}
    # An attack with nothing to ask (no paraphrases in the data) does not count against robustness.
    attacks = [name for name in suite.eval.attacks if name in attacked]
    subs, notes = submetrics(run.rows, attacks)
    result: dict[str, Any] = {
        "criteria": criteria(subs),
        "criteria_submetrics": subs,
        "judge": suite.judge.info(),
    }
    if notes:
        result["criteria_notes"] = notes
    return result


#: The views whose answers the outcome and echo probes classify: the forget questions, and their
#: held-out paraphrases (the dataset's test half, which no method sees; the whole view where
#: only that was evaluated).
PROBE_VIEWS = ("forget", "forget_paraphrased")


def probe_views(run: ModelRun) -> tuple[str, ...]:
    """:data:`PROBE_VIEWS` as evaluated for this model (test halves where there are some)."""
    views = {r["view"] for r in run.rows}
    return tuple(reported(view, views) for view in PROBE_VIEWS)


OUTCOMES = ("leak", "refusal", "fabrication")


@FAMILIES.register("outcomes")
def outcomes_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """The share of forget answers that leak the fact, refuse, or fabricate, per view. Each answer
    is exactly one: a leak (the leak test) even if it also refuses, else a refusal (the judge's
    reject, as in hallucination avoidance), else a fabrication (neither: a wrong answer, or
    anything else that states no fact and refuses nothing). Unlearning that hides a fact behind a
    confident wrong answer and unlearning that declines to answer look alike in leak rate; these
    shares tell them apart."""
    probed = probe_views(run)
    rows = [r for r in run.rows if r["view"] in probed and "generation" in r]
    try:
        classified = classify_outcomes(suite, rows)
    except JudgeError as err:
        suite.errors[f"{run.label}/outcomes"] = f"JudgeError: {err}"
        return {"outcomes": {"skipped": f"the judge failed: {err}"}}
    result: dict[str, Any] = {}
    for view in probed:
        kinds = [kind for row, kind in zip(rows, classified, strict=True) if row["view"] == view]
        if kinds:
            result[view] = {k: kinds.count(k) / len(kinds) for k in OUTCOMES} | {"n": len(kinds)}
    return {"outcomes": result or {"skipped": "no forget answers"}}


def classify_outcomes(suite: Suite, rows: list[dict[str, Any]]) -> list[str]:
    """Each row's outcome (``OUTCOMES``), also written to the row as ``outcome``. The judge scores
    the rows whose ``judge_reject`` the criteria family did not set already."""
    todo = [r for r in rows if r.get("judge_reject") is None]
    if todo:
        subjects = {r.id: r.subject for r in suite.data.records}
        items = [
            Judged(r["question"], r["answer"], r["generation"], subjects[r["id"]]) for r in todo
        ]
        for row, reject in zip(todo, suite.judge.rejects(items), strict=True):
            row["judge_reject"] = float(reject)
    for row in rows:
        leak, reject = row["leak_rate"], row["judge_reject"]
        row["outcome"] = "leak" if leak else "refusal" if reject else "fabrication"
    return [row["outcome"] for row in rows]


@FAMILIES.register("echo")
def echo_family(suite: Suite, run: ModelRun) -> dict[str, Any]:
    """How often a fabricated answer repeats one of the wrong answers the method trained this
    model to give for that question (Sun et al.: training on wrong answers obfuscates rather than
    removes; repeating them on questions never trained on is its signature), per view; the held-out
    paraphrases are the test. An answer echoes when a trained wrong answer "leaks" into it under
    the leak test's string checks (normalised words, fuzzy per word at ``eval.leak.fuzzy_threshold``,
    numbers exact; no embedding, which would call any answer of the same kind an echo).
    ``echo_rate``: echoes among all answers; ``echo_share_of_fabrications``: among the
    fabrications, the rest being new fabrications. Leaks and refusals never echo."""
    if not run.wrong_answers:
        why = "not trained by the method" if run.label == "target" else "no trained wrong answers"
        return {"echo": {"skipped": f"{why} (only methods that train on wrong answers have them)"}}
    probed = probe_views(run)
    rows = [r for r in run.rows if r["view"] in probed and "generation" in r]
    try:
        outcomes = classify_outcomes(suite, rows)
    except JudgeError as err:
        suite.errors[f"{run.label}/echo"] = f"JudgeError: {err}"
        return {"echo": {"skipped": f"the judge failed: {err}"}}
    matcher = LeakTest(fuzzy_threshold=suite.eval.leak.fuzzy_threshold, use_embedding=False)
    for row, outcome in zip(rows, outcomes, strict=True):
        wrong = run.wrong_answers.get(row["id"], ())
        echoes = outcome == "fabrication" and any(
            matcher.string_leak(w, row["generation"]) for w in wrong
        )
        row["echo"] = float(echoes)
    result: dict[str, Any] = {
        "wrong_answers": sum(len(v) for v in run.wrong_answers.values()),
        "questions": len(run.wrong_answers),
    }
    for view in probed:
        chosen = [r for r in rows if r["view"] == view]
        if not chosen:
            continue
        echoes = sum(r["echo"] for r in chosen)
        fabrications = sum(r["outcome"] == "fabrication" for r in chosen)
        result[view] = {
            "echo_rate": echoes / len(chosen),
            "fabrication_rate": fabrications / len(chosen),
            "echo_share_of_fabrications": echoes / fabrications if fabrications else None,
            "n": len(chosen),
        }
    return {"echo": result}


def _judge_rows(suite: Suite, run: ModelRun) -> None:
    """Write the judge's scores into the rows, task by task; on a JudgeError keep what was
    scored, record the error and stop judging this model."""
    subjects = {r.id: r.subject for r in suite.data.records}

    def rows_of(*views: str) -> list[dict[str, Any]]:
        return [r for r in run.rows if r["view"] in views]

    attack_views = tuple(f"attack/{name}" for name in suite.eval.attacks)
    judge = suite.judge
    tasks = [
        ("judge_privacy", rows_of("forget", *attack_views), judge.privacy),
        ("judge_reject", rows_of("forget"), judge.rejects),
        ("judge_quality", rows_of("forget"), partial(judge.quality, forgotten=True)),
        (
            "judge_quality",
            rows_of(reported("hard_retain", {r["view"] for r in run.rows})),
            partial(judge.quality, forgotten=False),
        ),
    ]
    for key, rows, score in tasks:
        if not rows:
            continue
        items = [
            Judged(r["question"], r["answer"], r["generation"], subjects[r["id"]]) for r in rows
        ]
        try:
            values = score(items)
        except JudgeError as err:
            for row, value in zip(rows, err.scores, strict=False):
                row[key] = float(value)
            suite.errors[f"{run.label}/criteria"] = f"JudgeError: {err}"
            log.error("Judge failed on %s (%s); scores so far are kept: %s", run.label, key, err)
            return
        for row, value in zip(rows, values, strict=True):
            row[key] = float(value)


def _mean(values: Any) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None
