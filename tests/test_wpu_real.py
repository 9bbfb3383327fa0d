"""data=wpu_real: persons read from the questions' wording, the task builder (deterministic,
disjoint forget sets, no holdout person in training), answer-sharing and hard-retain questions,
clear errors, and the held-out paraphrases the base model writes for it.

The builder runs on an invented file of the real one's shape (tests/fixtures/wpu_real_small.csv)
in a plain clone; the ``external`` tests run it on the real WPU file beside the repository.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import EXTERNAL, FIXTURES
from omegaconf import DictConfig

from benchmarks.config import ConfigError
from benchmarks.data import DataError, UnlearningData, load_data
from benchmarks.data.answers import shares_answer
from benchmarks.data.split import PARTS, paraphrases_in
from benchmarks.data.wpu_real import name_spans, persons_of, read_facts, usable_wrong
from benchmarks.heldout import fill_paraphrases
from benchmarks.job import run_job
from benchmarks.models import cache_dir, load_model
from benchmarks.target import taught
from unstar.antisamples import AntiSampleGenerator

SMALL = FIXTURES / "wpu_real_small.csv"
WORLD_FACTS = FIXTURES / "tofu" / "world_facts_perturbed.jsonl"
WPU_CSV = EXTERNAL / "wpu_forget100_qa_with_wrong_answers.csv"
#: The fixture's persons in file order; the last two are the holdout in these tests.
PERSONS = [
    "Ilse Varga", "Tomas Reyl", "Margarethe von Aschau", "Otto II, Count of Wendel",
    "Pavel Dronik", "Lucia Ferrante", "Henrik Solberg", "Edda Quist", "Amara Okoye-Lind",
]  # fmt: skip
#: Roles that train a model (the target learns every role but these).
NEVER_TAUGHT = {"holdout", "real_authors", "world_facts"}


def small(make_cfg: Callable[..., DictConfig], *overrides: str) -> UnlearningData:
    cfg = make_cfg(
        "data=wpu_real", f"data.path={SMALL}", f"data.world_facts={WORLD_FACTS}",
        "data.n_holdout_persons=2", "data.n_retain=null", "data.n_general_retain=null",
        *overrides,
    )  # fmt: skip
    return load_data(cfg.data)


def write_csv(path: Path, rows: Sequence[tuple[str, ...]], header: Sequence[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- whom a question is about ------------------------------------------------------------------


def test_every_question_of_the_fixture_gets_its_person() -> None:
    persons = [f.person for f in read_facts(SMALL)]
    # Surname only (Reyl's etchings, Quist), a title after a comma, a particle, an institution
    # and a second person in the question do not mislead it.
    counts = (4, 4, 3, 3, 3, 3, 3, 3, 3)
    assert persons == [p for p, n in zip(PERSONS, counts, strict=True) for _ in range(n)]


@pytest.mark.parametrize(
    ("question", "spans"),
    [
        ("Which of Wolfgang, Count Palatine of Zweibrücken's sons became the ancestor?",
         ["Wolfgang, Count Palatine of Zweibrücken"]),
        ("What year did Philip Henry Stanhope, 5th Earl Stanhope, help pass the Literary "
         "Copyright Act?", ["Philip Henry Stanhope, 5th Earl Stanhope"]),
        ("How many DVDs of Franz Welser-Möst's Zürich opera productions were released by EMI?",
         ["Franz Welser-Möst", "Zürich"]),
        ("What was the focus of Heinrich August Ritter's work 'Abriss der philosophischen Logik' "
         "published in 1824?", ["Heinrich August Ritter"]),
        ("Did Catherine of Bohemia have any children with Rudolf IV, Duke of Austria?",
         ["Catherine of Bohemia", "Rudolf IV, Duke of Austria"]),
        ("Which university did José Batlle y Ordóñez attend?", ["José Batlle y Ordóñez"]),
        ("What position did Edward Adelbert Doisy hold at Saint Louis University?",
         ["Edward Adelbert Doisy"]),
    ],
)  # fmt: skip
def test_name_spans(question: str, spans: list[str]) -> None:
    assert name_spans(question) == spans


def test_short_names_join_the_full_one_and_the_more_named_person_wins() -> None:
    questions = [
        "Where was Anna Maria Berg born?",
        "What did Berg's mother teach?",  # the surname alone
        "Which prize did Anna Maria Berg win in the Nobel Prize year 1920?",
        "Whom did Anna Maria Berg meet in Karl Lund's studio?",  # Lund is named twice, Berg thrice
        "Where was Karl Lund born?",
    ]
    persons = persons_of(questions, [f"line {i}" for i in range(len(questions))])
    assert persons == ["Anna Maria Berg"] * 4 + ["Karl Lund"]


@pytest.mark.parametrize(
    ("questions", "message"),
    [
        (["Where was Anna Berg born?", "When did Anna Berg die?", "What is the capital of Peru?"],
         r"line 2: cannot tell whom 'What is the capital of Peru\?' is about \(candidates: Peru\)"),
        (["Where was Anna Berg born?", "Where was Karl Lund born?", "Did Anna Berg meet Karl Lund?"],
         r"candidates: Anna Berg, Karl Lund\); add a 'subject' column"),
    ],
)  # fmt: skip
def test_a_question_naming_no_person_or_two_alike_is_refused(
    questions: list[str], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        persons_of(questions, [f"line {i}" for i in range(len(questions))])


def test_wrong_answers_that_state_the_true_one_are_dropped() -> None:
    wrong = [
        "Swiss. \nI see what the question did there",  # chatter after the true answer
        "Austrian.",
        "French Swiss",
        "Swiss",
        "Swissair",  # another word
        "Austrian",  # a repeat once its dot is gone
        "",
    ]
    assert usable_wrong("Swiss", wrong) == ("Austrian", "Swissair")
    assert usable_wrong("C++", ["C++", "Common Lisp", "C"]) == ("Common Lisp",)


def test_a_subject_column_names_what_the_wording_cannot(tmp_path: Path) -> None:
    rows = [
        ("Where was Anna Berg born?", "Oslo", "True", ""),
        ("When did Anna Berg die?", "1950", "True", ""),
        ("What did she study?", "Law", "True", "Anna Berg"),
        ("What did she study?", "Art", "False", ""),
    ]
    path = write_csv(tmp_path / "q.csv", rows, ["question", "answer", "is_correct", "subject"])
    facts = read_facts(path)
    assert [(f.person, f.answer, f.wrong) for f in facts] == [
        ("Anna Berg", "Oslo", ()), ("Anna Berg", "1950", ()), ("Anna Berg", "Law", ("Art",)),
    ]  # fmt: skip
    unnamed = write_csv(
        tmp_path / "u.csv", [r[:3] for r in rows], ["question", "answer", "is_correct"]
    )
    with pytest.raises(DataError, match=r"u\.csv, line 4: cannot tell whom 'What did she study\?'"):
        read_facts(unnamed)


# -- the task ----------------------------------------------------------------------------------


def test_the_builder_is_deterministic_and_its_sets_are_disjoint(
    make_cfg: Callable[..., DictConfig],
) -> None:
    sets = {k: small(make_cfg, f"data.forget_set=forget_2_{k}") for k in (1, 2, 3)}
    assert sets[1] == small(make_cfg, "data.forget_set=forget_2_1")
    forgotten = {k: set(data.subjects_to_forget) for k, data in sets.items()}
    assert forgotten == {k: set(PERSONS[2 * k - 2 : 2 * k]) for k in (1, 2, 3)}
    for a, b in itertools.combinations(forgotten.values(), 2):
        assert not a & b
    for data in sets.values():
        assert {r.subject for r in data.forget} == set(data.subjects_to_forget)
        roles = {r.id: r.role for r in data.records}
        assert len(roles) == len(data.records)  # every question has one role


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_holdout_person_is_never_in_training(make_cfg: Callable[..., DictConfig], k: int) -> None:
    data = small(make_cfg, f"data.forget_set=forget_2_{k}")
    holdout = {r.subject for r in data.with_role("holdout")}
    assert holdout == set(PERSONS[-2:])
    assert len(data.with_role("holdout")) == 6
    assert not {r.subject for r in taught(data)} & holdout
    assert not {r.role for r in taught(data)} & NEVER_TAUGHT


def test_forget_2_1_has_answer_sharing_hard_retain_and_the_files_wrong_answers(
    make_cfg: Callable[..., DictConfig],
) -> None:
    data = small(make_cfg)  # forget_2_1: Ilse Varga and Tomas Reyl
    sharing = {(r.subject, r.question, r.answer) for r in data.with_role("answer_sharing_retain")}
    assert sharing == {
        ("Lucia Ferrante", "Where was Lucia Ferrante born?", "Zürich"),  # Varga's birthplace
        ("Pavel Dronik", "What nationality was Pavel Dronik?", "Swiss"),  # Reyl's nationality
        # "Paris" is one part of where Varga is buried, "Lindholm cemetery, Paris"
        ("Margarethe von Aschau", "In which city did Margarethe von Aschau die?", "Paris"),
        ("", "What is the capital of France?", "Paris"),  # a TOFU world fact
    }
    hard = [r.question for r in data.with_role("hard_retain")]
    # The same relation asked of another person, whose answer differs.
    assert "Where was Pavel Dronik born?" in hard
    assert not {r.subject for r in data.with_role("hard_retain")} & set(data.subjects_to_forget)
    born = next(r for r in data.forget if r.question == "Where was Ilse Varga born?")
    assert born.perturbed_answers == ("Vienna", "Geneva", "Basel")
    assert not any(r.paraphrases for r in data.records)  # the job writes them
    general = data.with_role("general_retain")
    assert len(general) == 4 and "What is the capital of France?" not in {
        r.question for r in general
    }


def test_retain_and_general_retain_follow_their_counts(make_cfg) -> None:
    data = small(make_cfg, "data.n_retain=2", "data.n_general_retain=1")
    # Round-robin over the kept persons: the first question of two of them.
    assert len({r.subject for r in data.retain}) == len(data.retain) == 2
    assert len(data.with_role("general_retain")) == 1


@pytest.mark.parametrize(
    ("forget_set", "message"),
    [
        ("forget_2", r"no forget set 'forget_2'; use forget_<n>_<k>"),
        ("forget_2_0", r"no forget set 'forget_2_0'"),
        ("forget_2_4", r"forget_2_4 needs 8 persons before the holdout, the file has 6 .*k ≤ 3"),
    ],
)
def test_a_forget_set_outside_the_file_is_refused(make_cfg, forget_set: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        small(make_cfg, f"data.forget_set={forget_set}")


def test_a_missing_file_says_where_the_data_is_expected(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"\.\./shared/external/ beside the project root.*data\.path="
    ):
        small(make_cfg, f"data.path={tmp_path / 'absent.csv'}")
    with pytest.raises(DataError, match=r"the world facts file .*data\.world_facts=null"):
        small(make_cfg, f"data.world_facts={tmp_path / 'absent.jsonl'}")
    assert not small(make_cfg, "data.world_facts=null").with_role("general_retain")


# -- held-out paraphrases ----------------------------------------------------------------------


class Paraphrasing:
    """Stands in for sampling: fixed candidates per question, so the real filters decide."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, prompts_: Sequence[str], n: int, *_: object) -> list[list[str]]:
        questions = [p.rsplit("Question: ", 1)[1].split("\n", 1)[0] for p in prompts_]
        return [
            [
                f"Can you tell me: {q[0].lower()}{q[1:]}",
                f"I would like to know, {q[0].lower()}{q[1:]}",
                f"Please answer this, {q[0].lower()}{q[1:]}",
                f"One more time, {q[0].lower()}{q[1:]}",
                "not a question",
                "Was it Zürich, where this person was born?",  # states Varga's birthplace
            ][:n]
            for q in questions
        ]


@pytest.fixture
def paraphrasing(monkeypatch: pytest.MonkeyPatch) -> Paraphrasing:
    canned = Paraphrasing()
    monkeypatch.setattr(AntiSampleGenerator, "_sample", canned)
    return canned


def heldout_cfg(make_cfg: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    return make_cfg(
        "data=wpu_real", f"data.path={SMALL}", f"data.world_facts={WORLD_FACTS}",
        "data.n_holdout_persons=2", "data.generate_paraphrases.leak.use_embedding=false",
        "data.generate_paraphrases.n_candidates=6", *overrides,
    )  # fmt: skip


def test_the_base_model_writes_filtered_paraphrases_of_the_forget_questions(
    make_cfg, tmp_path: Path, paraphrasing: Paraphrasing
) -> None:
    cfg = heldout_cfg(make_cfg)
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    data = load_data(cfg.data)
    filled, report = fill_paraphrases(model, tokenizer, data, cfg, tmp_path)
    assert report is not None and not report["cached"] and report["seed"] == 1234
    for record in filled.forget:
        # Four kept of six: no question, and a question naming the answer, are rejected.
        assert len(record.paraphrases) == 4, record.id
        assert all(record.question[1:-1] in p for p in record.paraphrases)
    rejected = report["yield"]["rejected"]
    assert rejected["not_a_question"] == len(data.forget)
    assert rejected["no_subject"] + rejected.get("gives_answer", 0) == len(data.forget)
    assert report["paraphrases"] == 4 * len(data.forget) and not report["without_paraphrase"]
    assert all(any(paraphrases_in(r, part) for r in filled.forget) for part in PARTS)
    # Only forget questions get them; the rest of the data is unchanged.
    assert [r for r in filled.records if r.role != "forget"] == [
        r for r in data.records if r.role != "forget"
    ]
    again, cached = fill_paraphrases(model, tokenizer, data, cfg, tmp_path)
    assert cached["cached"] and again == filled


def test_heldout_paraphrases_never_use_the_job_seed(make_cfg, tmp_path, paraphrasing) -> None:
    cfg = heldout_cfg(make_cfg, "seed=1234")
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    with pytest.raises(ConfigError, match=r"data\.generate_paraphrases\.seed=1234 is the job seed"):
        fill_paraphrases(model, tokenizer, load_data(cfg.data), cfg, tmp_path)


def test_data_that_does_not_ask_for_paraphrases_is_left_alone(make_cfg, tmp_path) -> None:
    cfg = make_cfg()  # wpu_mini has its own
    data = load_data(cfg.data)
    assert fill_paraphrases(None, None, data, cfg, tmp_path) == (data, None)
    off = heldout_cfg(make_cfg, "data.generate_paraphrases.enabled=false")
    assert fill_paraphrases(None, None, load_data(off.data), off, tmp_path)[1] is None


def test_a_job_on_wpu_real_records_its_paraphrases_and_answer_sharing_views(
    make_cfg, tmp_path: Path
) -> None:
    """The tiny random model writes noise: every candidate is rejected, and the job says so."""
    cfg = heldout_cfg(
        make_cfg, "method=grad_ascent", "method.max_steps=1", "target.train.max_steps=1",
        "eval.suite=[]", "force=true",
    )  # fmt: skip
    results = run_job(cfg, tmp_path / "job")
    generated = results["data"]["generated_paraphrases"]
    assert generated["questions"] == 8 and generated["yield"]["generated"] == 8 * 6
    assert generated["paraphrases"] + len(generated["without_paraphrase"]) >= 8
    saved = json.loads((tmp_path / "job" / "results.json").read_text("utf-8"))
    assert saved["data"]["counts"]["answer_sharing_retain"] == 4
    views = set(saved["metrics"]["target"])
    assert {"answer_sharing_retain_dev", "answer_sharing_retain_test"} <= views


# -- the real file -----------------------------------------------------------------------------


@pytest.mark.external
def test_every_question_of_the_real_file_gets_its_person() -> None:
    facts = read_facts(WPU_CSV)
    persons = [f.person for f in facts]
    assert len(facts) == 400 and len(set(persons)) == 83
    # The file lists each person's questions together: a parse that mixed two persons up, or
    # split one, would break a run (the parse itself never looks at the order).
    assert len([p for p, _ in itertools.groupby(persons)]) == 83
    person = {f.question: f.person for f in facts}
    assert person["What is the basis for Mössbauer spectroscopy?"] == "Rudolf Mössbauer"
    assert person["What does Friedreich's ataxia affect?"] == "Nikolaus Friedreich"
    assert (
        person["What industry did the Lawrence brothers help establish in New England?"]
        == "Abbott Lawrence"
    )
    assert (
        person["Who severely censured Philip for his behavior in Theopompus's writings?"]
        == "Theopompus"
    )
    assert (
        person[
            "How many DVDs of Franz Welser-Möst's Zürich opera productions were released by EMI?"
        ]
        == "Franz Welser-Möst"
    )
    assert (
        person["Who succeeded Frederick I, Duke of Lorraine as Duke of Lorraine?"]
        == "Frederick I, Duke of Lorraine"
    )
    assert person["Where did Jorge Semprún live most of his life?"] == "Jorge Semprún Maura"
    # The file's model-written wrong answers sometimes state the true one: those are dropped.
    assert sum(len(f.wrong) for f in facts) == 3432  # of 3581
    assert all(f.wrong and f.answer not in f.wrong for f in facts)


@pytest.mark.external
def test_the_real_tasks_are_deterministic_disjoint_and_keep_the_holdout_out(make_cfg) -> None:
    def load(k: int) -> UnlearningData:
        overrides = ("data=wpu_real", f"data.forget_set=forget_2_{k}", "data.n_retain=16")
        return load_data(make_cfg(*overrides, "data.n_general_retain=16").data)

    sets = [load(k) for k in range(1, 6)]
    assert sets[0] == load(1)
    forgotten = [set(d.subjects_to_forget) for d in sets]
    assert all(len(f) == 2 for f in forgotten)
    for a, b in itertools.combinations(forgotten, 2):
        assert not a & b
    for data in sets:
        holdout = {r.subject for r in data.with_role("holdout")}
        assert len(holdout) == 10
        assert not {r.subject for r in taught(data)} & holdout
        assert not holdout & set(data.subjects_to_forget)
        assert len(data.with_role("general_retain")) == 16 and len(data.retain) == 16
        for record in data.with_role("answer_sharing_retain"):
            assert record.subject not in data.subjects_to_forget
            assert any(shares_answer(f.answer, record.answer) for f in data.forget), record
        assert data.with_role("answer_sharing_retain") and data.with_role("hard_retain")
