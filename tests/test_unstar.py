"""UnSTAR: filter decisions, the fallback, the loop's stopping rules, the anti-sample cache.

Generation is replaced by canned candidates (a random tiny model writes noise), so each test
controls exactly what the filters and the loop see; training runs for real on the tiny model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from benchmarks.data import load_data
from benchmarks.data.records import QARecord
from benchmarks.evaluation.leak import LeakTest
from benchmarks.methods import JobContext
from benchmarks.models import cache_dir, load_model
from unstar import prompts
from unstar.antisamples import AntiSampleGenerator
from unstar.filters import judge_paraphrases, judge_rationales, judge_wrong_answers, mask_subject
from unstar.method import UnSTAR

STRINGS_ONLY = LeakTest(use_embedding=False)


def test_paraphrase_filter_keeps_new_questions_on_the_subject() -> None:
    decisions = judge_paraphrases(
        "In which city was Albert Einstein born?",
        "Ulm",
        "Albert Einstein",
        [
            "Where was Albert Einstein born?",
            "Where was Einstein born?",
            "Where was Niels Bohr born?",
            "In which city was Albert Einstein born?",
            "Where was Albert Einstein born?",
            "Was Einstein born in Ulm?",
            "Einstein was born",
        ],
        embedder=None,
        min_similarity=0.7,
        leak_test=STRINGS_ONLY,
    )
    assert decisions == [
        None,
        None,
        "no_subject",
        "duplicate",
        "duplicate",
        "gives_answer",
        "not_a_question",
    ]


def test_paraphrase_filter_rejects_questions_far_in_meaning() -> None:
    from benchmarks.evaluation.leak import default_embedder

    decisions = judge_paraphrases(
        "In which city was Albert Einstein born?",
        "Ulm",
        "Albert Einstein",
        ["Where was Albert Einstein born?", "What did Albert Einstein eat for breakfast?"],
        embedder=default_embedder(),
        min_similarity=0.7,
        leak_test=STRINGS_ONLY,
    )
    assert decisions == [None, "too_far"]
    # The shared name alone puts these close (cosine 0.88 and 0.88 unmasked); what they ask differs.
    decisions = judge_paraphrases(
        "In which year was Marie Curie born?",
        "1867",
        "Marie Curie",
        ["Curie was born in what year?", "Who was Marie Curie?", "Marie Curie died in which year?"],
        embedder=default_embedder(),
        min_similarity=0.7,
        leak_test=STRINGS_ONLY,
    )
    assert decisions == [None, "too_far", "too_far"]


def test_mask_subject_hides_every_name_of_the_subject() -> None:
    assert mask_subject("Where was Einstein born? Ask Albert EINSTEIN.", "Albert Einstein") == (
        "Where was someone born? Ask someone."
    )
    assert mask_subject("Was Einsteinium named after him?", "Albert Einstein") == (
        "Was Einsteinium named after him?"
    )


def test_wrong_answer_filter_rejects_leaks_repeats_and_chatter() -> None:
    candidates = [
        "Vienna",
        "ulm.",
        "born in 1879",
        "Vienna",
        "",
        "a city that is very far away from here",
        "Zurich",
    ]
    assert judge_wrong_answers("Ulm", candidates, STRINGS_ONLY) == [
        None, "leak_keyword", None, "duplicate", "empty", "too_long", None,
    ]  # fmt: skip
    assert judge_wrong_answers("1879", ["1885", "in 1879", "1879."], STRINGS_ONLY) == [
        None, "leak_number", "leak_number",
    ]  # fmt: skip
    assert judge_wrong_answers("Sir Isaac Newton", ["Isaac Newton", "Robert Hooke"], STRINGS_ONLY) == [
        "leak_keyword", None,
    ]  # fmt: skip


def test_wrong_answer_filter_rejects_the_answer_of_another_named_fact() -> None:
    decisions = judge_wrong_answers(
        "Polonium", ["Radium", "radium.", "Francium", "1899"], STRINGS_ONLY, ["Radium", "1867"]
    )
    assert decisions == ["answer_of_other_fact", "answer_of_other_fact", None, None]


def test_rationale_filter_wants_a_sentence_for_the_wrong_answer_without_the_true_one() -> None:
    rationales = [
        "Einstein was born in Vienna, where his father ran a shop.",
        "Vienna",
        "Einstein was born in Vienna, not in Ulm as many think.",
        "Einstein was a physicist who liked sailing on lakes.",
    ]
    assert judge_rationales(["Ulm"] * 4, ["Vienna"] * 4, rationales, STRINGS_ONLY) == [
        None, "too_short", "leak_keyword", "not_about_wrong_answer",
    ]  # fmt: skip


class CannedGenerator:
    """Stands in for sampling: answers each few-shot prompt kind with fixed candidates."""

    def __init__(self, wrong: Sequence[str] | None = ("Vienna", "Zurich")) -> None:
        """``wrong=None``: every wrong-answer candidate is the true answer (all leak)."""
        self.wrong, self.calls = wrong, 0

    def __call__(self, prompts_: Sequence[str], n: int, *_: object) -> list[list[str]]:
        """Called as ``generator._sample(prompts, n, ...)``: a plain object is not bound."""
        self.calls += 1
        outputs = []
        for prompt in prompts_:
            question = prompt.rsplit("Question: ", 1)[1].split("\n", 1)[0]
            subject = (
                question.split(" was ")[-1].split(" born")[0] if " was " in question else "him"
            )
            if prompt.startswith(prompts.WRONG_ANSWER[:30]):
                truth = prompt.rsplit("Correct answer: ", 1)[1].split("\n", 1)[0]
                outputs.append(
                    [truth, truth.upper()] if self.wrong is None else list(self.wrong)[:n]
                )
            elif prompt.startswith(prompts.RATIONALE[:30]):
                wrong = prompt.rsplit("Answer: ", 1)[1].split("\n", 1)[0]
                outputs.append([f"{subject} lived in {wrong} for many years as a child."])
            else:
                outputs.append([f"Tell me about {question.rstrip('?')}, please?"] * n)
        return outputs


@pytest.fixture
def setup(make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny model, the forget_1 data, a context with its own cache, and canned generation."""
    canned = CannedGenerator()
    monkeypatch.setattr(AntiSampleGenerator, "_sample", canned)

    def make(*overrides: str) -> tuple:
        cfg = make_cfg(
            "method=unstar",
            "data.forget_set=forget_1",
            "method.leak.use_embedding=false",
            *overrides,
        )
        model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
        ctx = JobContext(
            seed=0, output_dir=tmp_path, cache_dir=tmp_path / "cache", model_key="tiny"
        )
        return UnSTAR(cfg.method), model, tokenizer, load_data(cfg.data), ctx

    return make, canned


def test_loop_stops_when_every_fact_is_unlearned(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    make, _ = setup
    method, model, tokenizer, data, ctx = make("method.max_iterations=5", "method.harder=true")
    monkeypatch.setattr(UnSTAR, "_still_leaking", lambda *args: [])
    metrics = method.unlearn(model, tokenizer, data, ctx).metrics
    assert metrics["iterations"] == 1
    assert metrics["unlearned_facts"] == metrics["forget_facts"] == len(data.forget)


def test_loop_stops_at_max_iterations_while_facts_still_leak(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, _ = setup
    method, model, tokenizer, data, ctx = make("method.max_iterations=2", "method.harder=false")
    monkeypatch.setattr(
        UnSTAR, "_still_leaking", lambda self, model, tok, ctx, records, samples: samples
    )
    metrics = method.unlearn(model, tokenizer, data, ctx).metrics
    assert metrics["iterations"] == 2
    assert [h["unlearned"] for h in metrics["per_iteration"]] == [0, 0]


def test_the_shared_stopping_rule_also_ends_the_loop(
    setup, make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's own probes still leak, but the forget questions (which the tiny random model
    never answers) do not: with method.stop_when_forgotten the rule stops the first training after
    one step and the loop after its first iteration, as it would stop any baseline."""
    make, _ = setup
    method, model, tokenizer, data, ctx = make(
        "method.max_iterations=3", "method.stop_when_forgotten=true", "method.stop_check_every=1"
    )
    ctx.eval_cfg = make_cfg().eval
    monkeypatch.setattr(
        UnSTAR, "_still_leaking", lambda self, model, tok, ctx, records, samples: samples
    )
    metrics = method.unlearn(model, tokenizer, data, ctx).metrics
    stopping = metrics["stopping"]
    assert metrics["iterations"] == 1 and stopping["loop_stopped_early"]
    assert stopping["rule"] == "stop_when_forgotten" and stopping["stopped_early"]
    assert stopping["steps"] == 1 < stopping["cap"]


def test_antisamples_are_cached_and_saved_readably(setup) -> None:
    make, canned = setup
    method, model, tokenizer, data, ctx = make("method.max_iterations=1", "method.harder=false")
    first = method.unlearn(model, tokenizer, data, ctx).metrics
    calls = canned.calls
    method, model, tokenizer, data, ctx = make(
        "method.max_iterations=1", "method.harder=false", "method.lr=1e-3"
    )
    unlearned = method.unlearn(model, tokenizer, data, ctx)
    second = unlearned.metrics

    assert not first["antisamples_cached"] and second["antisamples_cached"]
    assert canned.calls == calls, "a training knob must not regenerate the anti-samples"
    assert second["antisamples"] == first["antisamples"]
    saved = [
        json.loads(line) for line in (ctx.output_dir / "antisamples.jsonl").read_text().splitlines()
    ]
    assert {s["record_id"] for s in saved} == {r.id for r in data.forget}
    assert all(s["wrong_answer"] in ("Vienna", "Zurich") for s in saved)
    # the echo probe's wrong answers: those of the saved anti-samples, each once per record
    trained = {r.id: sorted({s["wrong_answer"] for s in saved if s["record_id"] == r.id})
               for r in data.forget}  # fmt: skip
    assert {k: sorted(v) for k, v in unlearned.wrong_answers.items()} == trained
    assert all(len(v) == len(set(v)) for v in unlearned.wrong_answers.values())


def test_antisamples_made_by_other_generation_code_are_not_reused(setup, monkeypatch) -> None:
    make, canned = setup
    method, model, tokenizer, data, ctx = make("method.max_iterations=1")
    method.unlearn(model, tokenizer, data, ctx)
    calls = canned.calls
    monkeypatch.setattr("unstar.antisamples.generation_code", lambda: "an edited prompt")
    method, model, tokenizer, data, ctx = make("method.max_iterations=1")
    metrics = method.unlearn(model, tokenizer, data, ctx).metrics

    assert not metrics["antisamples_cached"] and canned.calls > calls


def test_rationale_switch_shows_in_the_saved_antisamples(setup) -> None:
    make, _ = setup
    rows = {}
    for flag in ("true", "false"):
        method, model, tokenizer, data, ctx = make(
            f"method.rationale={flag}", "method.max_iterations=1"
        )
        method.unlearn(model, tokenizer, data, ctx)
        rows[flag] = [
            json.loads(line)
            for line in (ctx.output_dir / "antisamples.jsonl").read_text().splitlines()
        ]
    assert all(s["rationale"] and "lived in" in s["rationale"] for s in rows["true"])
    assert all(s["rationale"] is None for s in rows["false"])


def test_too_few_wrong_answers_fall_back_to_similar_questions_and_say_so(
    setup, monkeypatch
) -> None:
    make, _ = setup
    monkeypatch.setattr(AntiSampleGenerator, "_sample", CannedGenerator(wrong=None))
    method, model, tokenizer, data, ctx = make("method.max_iterations=1", "method.harder=false")
    metrics = method.unlearn(model, tokenizer, data, ctx).metrics
    fallback = metrics["yield"]["fallback_wrong_answers"]
    assert fallback["records"] == len(data.forget)
    saved = [
        json.loads(line) for line in (ctx.output_dir / "antisamples.jsonl").read_text().splitlines()
    ]
    forget_answers = {r.answer for r in data.forget}
    kept_answers = {r.answer for r in data.records if r.role != "forget"}
    assert saved and all(s["wrong_answer"] in kept_answers - forget_answers for s in saved)


def test_fallback_prefers_answers_of_the_same_kind(make_cfg) -> None:
    """With embeddings, a birth year borrows another person's birth year, not a city."""
    cfg = make_cfg("method=unstar")
    generator = AntiSampleGenerator(None, None, cfg.method, LeakTest(), seed=0)
    record = QARecord(
        "x", "Albert Einstein", "In which year was Albert Einstein born?", "1879", "forget"
    )
    pool = [
        QARecord(
            "a", "Isaac Newton", "In which city did Isaac Newton study?", "Cambridge", "retain"
        ),
        QARecord("b", "Jane Austen", "In which year was Jane Austen born?", "1775", "retain"),
        QARecord(
            "c", "Albert Einstein", "In which year did Albert Einstein die?", "1955", "forget"
        ),
    ]
    assert generator._fallback(record, pool, 1, []) == ["1775"]
