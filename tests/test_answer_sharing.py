"""Answer-sharing retain questions (other subjects whose true answer is a forget answer) and
multi-part answers in the leak test and UnSTAR's filters.

wpu_mini has one answer-sharing question per forgotten fact; the target learns them, the
evaluation asks them in dev and test halves, selection and the comparison read them. UnSTAR
never trains a forget question on the answer it shares: the leak test rejects it as a wrong
answer, and the fallback no longer borrows it from the answer-sharing question.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig
from test_compare import fake_job

from analysis.compare import compare
from analysis.runs import read_sweep
from benchmarks.data import load_data
from benchmarks.data.answers import alternatives, answer_parts, shares_answer
from benchmarks.data.records import QARecord
from benchmarks.data.split import SPLIT_ROLES, parse_view
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.specs import METRICS
from benchmarks.models import cache_dir, load_model
from benchmarks.target import taught
from unstar.antisamples import AntiSampleGenerator
from unstar.filters import judge_paraphrases, judge_rationales, judge_wrong_answers, mask_subject

STRINGS_ONLY = LeakTest(use_embedding=False)
FORGET_SETS = ("forget_1", "forget_2", "forget_5", "forget_facts")


@pytest.mark.parametrize("forget_set", FORGET_SETS)
def test_wpu_mini_has_one_answer_sharing_question_per_forgotten_fact(
    make_cfg: Callable[..., DictConfig], forget_set: str
) -> None:
    data = load_data(make_cfg(f"data.forget_set={forget_set}").data)
    sharing = data.with_role("answer_sharing_retain")
    assert len(sharing) == len(data.forget)
    for record in data.forget:
        (shared,) = [r for r in sharing if r.id == f"{record.id}-as"]
        assert shares_answer(record.answer, shared.answer) == "exact", shared.id
        # About another subject: it never names the forgotten person.
        assert shared.subject and shared.subject not in data.subjects_to_forget
        assert not any(word in shared.question for word in record.subject.split()), shared.id
        assert len(shared.paraphrases) == 2 and len(shared.perturbed_answers) == 3
        assert record.answer not in shared.perturbed_answers
    # The kept facts of forget_facts' persons have none: they are not forgotten.
    kept = {r.id for r in data.with_role("forget_facts_retained")}
    assert not {r.id.removesuffix("-as") for r in sharing} & kept


def test_answer_sharing_is_taught_split_evaluated_and_selected(
    make_cfg: Callable[..., DictConfig],
) -> None:
    data = load_data(make_cfg("data.forget_set=forget_5").data)
    assert set(data.with_role("answer_sharing_retain")) <= set(taught(data))
    assert "answer_sharing_retain" in SPLIT_ROLES
    views = list(make_cfg(tiny=False).eval.views)
    # Evaluated in both halves, beside hard retain (the printed report keeps this order).
    at = views.index("hard_retain_test")
    assert views[at + 1 : at + 3] == ["answer_sharing_retain_dev", "answer_sharing_retain_test"]
    assert parse_view("answer_sharing_retain_test") == ("answer_sharing_retain", "test")
    columns = METRICS.get("rougeL_recall").columns()
    assert columns["unlearned/answer_sharing_retain_test/rougeL_recall"] == (
        "answer-sharing-retain-test rougeL"
    )


@pytest.mark.parametrize("forget_set", ["forget_5", "forget_facts"])
def test_a_shared_answer_is_never_an_unstar_wrong_answer_of_its_forget_question(
    make_cfg: Callable[..., DictConfig], forget_set: str
) -> None:
    data = load_data(make_cfg(f"data.forget_set={forget_set}").data)
    named = sorted({r.answer for r in data.forget})
    for shared in data.with_role("answer_sharing_retain"):
        forget = next(r for r in data.forget if f"{r.id}-as" == shared.id)
        others = [a for a in named if a != forget.answer]
        decision = judge_wrong_answers(forget.answer, [shared.answer], STRINGS_ONLY, others)
        assert decision[0] is not None and decision[0].startswith("leak_"), shared.id


def test_the_fallback_never_borrows_a_forget_answer_from_an_answer_sharing_question(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("method=unstar", "method.leak.use_embedding=false")
    generator = AntiSampleGenerator(None, None, cfg.method, STRINGS_ONLY, seed=0)
    record = QARecord(
        "einstein", "Albert Einstein", "Where was Albert Einstein born?", "Ulm", "forget"
    )
    pool = [
        record,
        QARecord("curie", "Marie Curie", "Where was Marie Curie born?", "Warsaw", "forget"),
        # It shares Curie's forget answer: borrowing it would teach Warsaw back.
        QARecord("poland", "Poland", "What is the capital of Poland?", "Warsaw", "answer_sharing_retain"),
        QARecord("newton", "Isaac Newton", "Where did Isaac Newton study?", "Cambridge", "retain"),
    ]  # fmt: skip
    named = {r.answer for r in pool if r.role == "forget"}
    assert generator._fallback(record, pool, 1, [], named) == ["Cambridge"]
    # Without the named answers (as before) it would have taken Warsaw.
    assert generator._fallback(record, pool, 1, []) == ["Warsaw"]


# -- multi-part answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "parts", "names"),
    [
        ("Universum Film AG (UFA)", ["Universum Film AG", "UFA"], ["Universum Film AG", "UFA"]),
        ("Hietzing cemetery, Vienna", ["Hietzing cemetery", "Vienna"], []),
        ("Claude Debussy and Maurice Ravel", ["Claude Debussy", "Maurice Ravel"], []),
        ("Lord of Montjoie, then count of Luxembourg",
         ["Lord of Montjoie", "count of Luxembourg"], []),
        ("Brown Boveri (BBC) (now ABB)", ["Brown Boveri", "BBC", "ABB"],
         ["Brown Boveri", "BBC", "ABB"]),
        ("Vienna", [], []),
        ("C++", [], []),
    ],
)  # fmt: skip
def test_answer_parts_and_alternatives(answer: str, parts: list[str], names: list[str]) -> None:
    assert answer_parts(answer) == parts
    assert alternatives(answer) == names


def test_shares_answer() -> None:
    assert shares_answer("The Mössbauer effect", "Mossbauer effect.") == "exact"
    assert shares_answer("Hietzing cemetery, Vienna", "Vienna") == "part"
    assert shares_answer("Universum Film AG (UFA)", "UFA") == "part"
    assert shares_answer("Vienna", "Hietzing cemetery, Vienna") is None  # not the whole answer
    assert shares_answer("Italian", "Italy") is None


@pytest.mark.parametrize(
    ("gold", "text", "leaks", "states_part"),
    [
        # An alias leaks the fact: either name of the same thing.
        ("Universum Film AG (UFA)", "He worked for UFA.", True, True),
        ("Universum Film AG (UFA)", "Universum Film AG", True, True),
        ("Vienna's Central Cemetery (Zentralfriedhof)", "the Zentralfriedhof", True, True),
        # A qualified place leaks only when stated whole (or near enough)...
        ("Hietzing cemetery, Vienna", "He lies in the Hietzing cemetery in Vienna.", True, True),
        ("Hietzing cemetery, Vienna", "Hietzing cemetery", True, True),
        # ... but a part of it is a part: a filter's reason to reject, not a leak.
        ("Hietzing cemetery, Vienna", "Vienna", False, True),
        ("Claude Debussy and Maurice Ravel", "Claude Debussy", False, True),
        ("October 28, 1921", "November 3, 1921", False, True),
        ("Hietzing cemetery, Vienna", "Highgate cemetery, London", False, False),
        ("Universum Film AG (UFA)", "Terra Film", False, False),
    ],
)
def test_the_leak_test_reads_aliases_and_parts(
    gold: str, text: str, leaks: bool, states_part: bool
) -> None:
    assert STRINGS_ONLY.leaks([gold], [text]) == [leaks]
    assert STRINGS_ONLY.states_part(gold, text) == states_part


def test_wrong_answers_of_a_multi_part_answer() -> None:
    candidates = [
        "Zentralfriedhof, Vienna",  # the true city
        "Vienna",
        "Highgate cemetery, London",
        "Hietzing cemetery in Vienna",
    ]
    assert judge_wrong_answers("Hietzing cemetery, Vienna", candidates, STRINGS_ONLY) == [
        "leak_part", "leak_part", None, "leak_keyword",
    ]  # fmt: skip
    assert judge_wrong_answers("Universum Film AG (UFA)", ["UFA", "Terra Film"], STRINGS_ONLY) == [
        "leak_keyword", None,
    ]  # fmt: skip
    # A long answer's wrong answers may be as long as it: the cap follows its length.
    long = "The history of Florence from 1527 to 1538"
    assert judge_wrong_answers(long, ["The history of Venice from 1490 to 1510"], STRINGS_ONLY) == [
        None
    ]
    assert judge_wrong_answers("Ulm", ["a city that is very far away from here"], STRINGS_ONLY) == [
        "too_long"
    ]


def test_paraphrases_and_rationales_must_not_give_a_part_away() -> None:
    subject = "Karl Hartl"
    decisions = judge_paraphrases(
        "Where is Karl Hartl buried?", "Hietzing cemetery, Vienna", subject,
        ["Where in Vienna is Karl Hartl buried?", "In which cemetery does Hartl rest?"],
        embedder=None, min_similarity=0.0, leak_test=STRINGS_ONLY,
    )  # fmt: skip
    assert decisions == ["gives_part", None]
    rationales = [
        "Karl Hartl was buried in Highgate cemetery after he died in London.",
        "Karl Hartl was buried in Highgate cemetery, far from Vienna.",
    ]
    assert judge_rationales(
        ["Hietzing cemetery, Vienna"] * 2, ["Highgate cemetery"] * 2, rationales, STRINGS_ONLY
    ) == [None, "leak_part"]


def test_mask_subject_hides_every_name_of_a_titled_subject() -> None:
    subject = "Wolfgang, Count Palatine of Zweibrücken"
    masked = mask_subject("Who was Wolfgang's father, the Count of Zweibrücken?", subject)
    assert "Wolfgang" not in masked and "Zweibrücken" not in masked


class Budget:
    """Stands in for sampling and records the token budget each call asks for."""

    def __init__(self) -> None:
        self.budgets: list[int] = []

    def __call__(self, prompts_: Sequence[str], n: int, max_new_tokens: int, *_: Any) -> list:
        self.budgets.append(max_new_tokens)
        return [["?"] * n for _ in prompts_]


def test_long_answers_and_questions_get_room_to_be_rewritten(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("method=unstar", "method.leak.use_embedding=false", "method.min_wrong=0")
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    generator = AntiSampleGenerator(model, tokenizer, cfg.method, STRINGS_ONLY, seed=0)
    budget = Budget()
    monkeypatch.setattr(generator, "_sample", budget)
    short = QARecord("s", "Ulm", "Where was X born?", "Ulm", "forget")
    long_answer = (
        "Knight Commander's Cross of the Order of Merit of the Federal Republic of Germany, "
        "Medal of Merit of the State of Baden-Württemberg"
    )
    long = QARecord("l", "Eberhard Jüngel", "What honors did Eberhard Jüngel receive?", long_answer,
                    "forget")  # fmt: skip
    generator.wrong_answers([short], [])
    generator.wrong_answers([short, long], [])
    generator.paraphrases([short])
    generator.paraphrases([QARecord("q", "X", long_answer + "?", "A", "forget")])
    answer_tokens = len(tokenizer(long_answer, add_special_tokens=False)["input_ids"])
    assert budget.budgets == [12, answer_tokens * 3 // 2, 40, (answer_tokens + 1) * 3 // 2]


def test_the_comparison_reports_answer_sharing_and_counts_it_in_retain_utility(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, "npo", 0, [0.0] * 10, tuned=True, split=True)
    fake_job(sweep, 1, "idk", 0, [0.0] * 10, tuned=True, split=True)
    path = sweep / "0" / "results.json"
    results = json.loads(path.read_text("utf-8"))
    results["generations"] += [  # npo lost every shared answer the target knew
        {"model": model, "view": "answer_sharing_retain_test", "id": f"as{q}",
         "rougeL_recall": 0.8 if model == "target" else 0.0}
        for model in ("target", "unlearned") for q in range(4)
    ]  # fmt: skip
    path.write_text(json.dumps(results))
    table = compare(read_sweep(sweep).jobs, n_boot=50).table
    assert table.loc["npo", "answer-sharing rougeL mean"] == 0.0
    # Hard and general retain keep half (0.4 of the target's 0.8), answer sharing nothing.
    assert table.loc["npo", "retain utility mean"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    # Data without the view: the utility is that of hard and general retain, as before.
    assert table.loc["idk", "retain utility mean"] == pytest.approx(0.5)
    assert np.isnan(table.loc["idk", "answer-sharing rougeL mean"])
