"""The embedded wpu_mini forget sets and the qa_file reader, on shipped, real and broken files."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXTERNAL, FIXTURES
from omegaconf import DictConfig

from benchmarks.data import DataError, UnlearningData, load_data
from benchmarks.data.wpu_mini import read_raw

WPU_CSV = EXTERNAL / "wpu_forget100_qa_with_wrong_answers.csv"
TOFU_WORLD_FACTS = EXTERNAL / "tofu_world_facts_perturbed.jsonl"
PERSONS = [p["name"] for p in read_raw()["persons"]]


def _mini(make_cfg: Callable[..., DictConfig], *overrides: str) -> UnlearningData:
    return load_data(make_cfg("data=wpu_mini", *overrides).data)


@pytest.mark.parametrize(
    ("forget_set", "n_persons"), [("forget_1", 1), ("forget_2", 2), ("forget_5", 5)]
)
def test_wpu_mini_forgets_every_fact_of_the_first_persons(
    make_cfg: Callable[..., DictConfig], forget_set: str, n_persons: int
) -> None:
    data = _mini(make_cfg, f"data.forget_set={forget_set}")

    forgotten = PERSONS[:n_persons]
    assert data.subjects_to_forget == tuple(forgotten)
    assert sorted({r.subject for r in data.forget}) == sorted(forgotten)
    assert len(data.forget) == 5 * n_persons
    assert len(data.with_role("hard_retain")) >= 2 * n_persons
    assert all(len(r.perturbed_answers) == 3 and r.paraphrases for r in data.forget)


@pytest.mark.parametrize("forget_set", ["forget_1", "forget_2", "forget_5", "forget_facts"])
def test_wpu_mini_retain_is_never_about_a_forgotten_person(
    make_cfg: Callable[..., DictConfig], forget_set: str
) -> None:
    data = _mini(make_cfg, f"data.forget_set={forget_set}", "data.n_retain=40")

    assert len(data.retain) == 40
    assert not {r.subject for r in data.retain} & set(data.subjects_to_forget)


def test_wpu_mini_small_retain_spans_many_persons(make_cfg: Callable[..., DictConfig]) -> None:
    retain = _mini(make_cfg, "data.n_retain=4").retain  # forget_2 by default

    assert [r.subject for r in retain] == PERSONS[2:6]


@pytest.mark.parametrize("n", [0, 4, 11])
def test_wpu_mini_general_retain_follows_n_general_retain(
    make_cfg: Callable[..., DictConfig], n: int
) -> None:
    data = _mini(make_cfg, f"data.n_general_retain={n}")

    assert len(data.with_role("general_retain")) == n


def test_wpu_mini_forget_facts_keeps_the_other_facts_of_the_same_persons(
    make_cfg: Callable[..., DictConfig],
) -> None:
    data = _mini(
        make_cfg, "data.forget_set=forget_facts", "data.facts_persons=2", "data.facts_per_person=2"
    )

    kept = data.with_role("forget_facts_retained")
    assert len(data.forget) == 4 and len(kept) == 6
    assert {r.subject for r in data.forget} == {r.subject for r in kept} == set(PERSONS[:2])
    assert not {r.id for r in data.forget} & {r.id for r in kept}
    assert not {r.question for r in data.forget} & {r.question for r in kept}


def test_wpu_mini_unknown_forget_set(make_cfg: Callable[..., DictConfig]) -> None:
    # forget_<k> takes any k from 1 (forget_3: the first 3 persons); other names are unknown.
    assert len(_mini(make_cfg, "data.forget_set=forget_3").forget) == 15
    with pytest.raises(DataError, match=r"no forget set 'forget_half'.*forget_<k>.*forget_facts"):
        _mini(make_cfg, "data.forget_set=forget_half")


def _qa_file(make_cfg: Callable[..., DictConfig], path: Path, *overrides: str) -> UnlearningData:
    # Not tiny: its overrides set data.n_retain, which qa_file does not have.
    cfg = make_cfg("data=qa_file", f"data.path={path}", *overrides, tiny=False)
    return load_data(cfg.data)


@pytest.mark.external
def test_qa_file_reads_wpu_answers_with_wrong_answers(make_cfg: Callable[..., DictConfig]) -> None:
    with WPU_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    data = _qa_file(make_cfg, WPU_CSV)

    assert len(data.records) == 400
    assert all(r.role == "forget" and r.perturbed_answers for r in data.records)
    wrong_rows = [r for r in rows if r["is_correct"] == "False"]
    assert sum(len(r.perturbed_answers) for r in data.records) == len(wrong_rows)
    varchi = next(r for r in data.records if r.question == "What nationality was Benedetto Varchi?")
    assert varchi.answer == "Italian"
    assert {"Greek", "French", "Croatian"} <= set(varchi.perturbed_answers)
    assert varchi.answer not in varchi.perturbed_answers


@pytest.mark.external
def test_qa_file_reads_tofu_world_facts(make_cfg: Callable[..., DictConfig]) -> None:
    data = _qa_file(make_cfg, TOFU_WORLD_FACTS)

    assert len(data.forget) == 117
    assert all(len(r.perturbed_answers) == 3 for r in data.records)
    first = data.records[0]
    assert (first.id, first.answer) == ("tofu_world_facts_perturbed-0", "Paris")
    assert first.perturbed_answers == ("Berlin", "London", "Madrid")


def test_qa_file_folds_one_answer_per_row_into_perturbed_answers(
    make_cfg: Callable[..., DictConfig],
) -> None:
    data = _qa_file(make_cfg, FIXTURES / "qa_is_correct.csv")

    assert [(r.id, r.answer) for r in data.records] == [
        ("qa_is_correct-0", "Zürich"),
        ("qa_is_correct-1", "Harbours"),
        ("qa_is_correct-2", "In 1987"),
    ]
    assert [r.perturbed_answers for r in data.records] == [
        ("Vienna", "Geneva"),
        ("Portraits", "Mountains", "Still lifes"),
        ("In 1990",),
    ]


def test_the_readmes_user_file_has_a_role_column_and_non_ascii_answers(
    make_cfg: Callable[..., DictConfig],
) -> None:
    data = _qa_file(make_cfg, FIXTURES / "user_facts.csv")

    roles = Counter(r.role for r in data.records)
    assert roles == {"forget": 4, "retain": 4, "hard_retain": 2, "general_retain": 4}
    assert data.records[0].answer == "Tromsø"
    assert {r.subject for r in data.with_role("forget")} == {"Maren Oduya"}


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_qa_file_reads_the_encoding_it_is_told(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "other.csv"
    path.write_text("question,answer\nWhere was Ilse Varga born?,Zürich\n", encoding)

    data = _qa_file(make_cfg, path, f"data.encoding={encoding}")
    assert data.records[0].answer == "Zürich"


@pytest.mark.parametrize(
    ("name", "text", "encoding", "message"),
    [
        (
            "latin.csv",
            "question,answer\nWhere was Ilse Varga born?,Zürich\n",
            "latin-1",
            r"latin\.csv: not valid utf-8 at byte 44 \(line 2\).*data\.encoding=latin-1",
        ),
        (
            "wide.jsonl",
            '{"question": "Where was Ilse Varga born?", "answer": "Zürich"}\n',
            "utf-16",
            r"wide\.jsonl: not valid utf-8 at byte 0 \(line 1\).*data\.encoding=utf-16",
        ),
    ],
    ids=["latin-1", "utf-16"],
)
def test_qa_file_decode_error_names_the_byte_and_the_option(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    name: str,
    text: str,
    encoding: str,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding)

    with pytest.raises(DataError, match=message):
        _qa_file(make_cfg, path)


def test_qa_file_unknown_encoding(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nQ?,A\n", "utf-8")
    with pytest.raises(DataError, match=r"data\.encoding='klingon' is not a known"):
        _qa_file(make_cfg, path, "data.encoding=klingon")


@pytest.mark.parametrize(
    ("name", "text", "repeat"),
    [
        ("dup.csv", "question,answer\nQ1?,A1\nQ2?,A2\n q1? ,a1\n", "line 4 repeats line 2"),
        (
            "dup.jsonl",
            '{"question": "Q1?", "answer": "A1"}\n{"question": "Q2?", "answer": "A2"}\n'
            '{"question": "q1?", "answer": "A1"}\n',
            "line 3 repeats line 1",
        ),
        (
            "dup.csv",
            "question,answer,is_correct\nQ1?,A1,True\nQ1?,B,False\nQ2?,A2,True\nQ1?,A1,True\n",
            "line 5 repeats line 2",
        ),
    ],
    ids=["csv", "jsonl", "is_correct"],
)
def test_qa_file_drops_a_repeated_question_and_answer_with_a_warning(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    text: str,
    repeat: str,
) -> None:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    with caplog.at_level(logging.WARNING, logger="benchmarks.data.qa_file"):
        data = _qa_file(make_cfg, path)

    assert [(r.question, r.answer) for r in data.records] == [("Q1?", "A1"), ("Q2?", "A2")]
    assert "dropped 1 rows that repeat an earlier question and answer" in caplog.text
    assert f"({repeat})" in caplog.text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "conflict.csv",
            "question,answer\nQ1?,A1\nQ2?,A2\nQ1? ,B1\n",
            r"conflict\.csv, line 4 and line 2: the same question 'Q1\?' with different answers "
            r"\('B1' and 'A1'\)",
        ),
        (
            "conflict.jsonl",
            '{"question": "Q1?", "answer": "A1"}\n{"question": "q1?", "answer": "B1"}\n',
            r"conflict\.jsonl, line 2 and line 1: the same question 'q1\?' with different answers",
        ),
        (
            "conflict.json",
            '[{"question": "Q1?", "answer": "A1"}, {"question": "Q1?", "answer": "B1"}]',
            r"conflict\.json, item 1 and item 0: the same question",
        ),
        (
            "conflict_flag.csv",
            "question,answer,is_correct\nQ1?,A1,True\nQ1?,C,False\nQ1?,B1,True\n",
            r"conflict_flag\.csv, line 4 and line 2: the same question 'Q1\?' with different answers",
        ),
        (
            "role.csv",
            "question,answer,role\nQ1?,A1,forget\nQ1?,A1,retain\n",
            r"role\.csv, line 3 and line 2: the same question 'Q1\?' with different roles",
        ),
    ],
    ids=["csv", "jsonl", "json", "is_correct", "role"],
)
def test_qa_file_same_question_with_another_answer_is_an_error(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    with pytest.raises(DataError, match=message):
        _qa_file(make_cfg, path)


@pytest.mark.parametrize("column", ["role", "split"])  # names: keep (the old column name)
def test_qa_file_reads_the_role_column_or_its_old_name(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, column: str
) -> None:
    path = tmp_path / "roles.csv"
    path.write_text(f"question,answer,{column}\nQ1?,A1,forget\nQ2?,A2,retain\nQ3?,A3,\n", "utf-8")
    data = _qa_file(make_cfg, path, "data.default_role=holdout")

    assert [r.role for r in data.records] == ["forget", "retain", "holdout"]


def test_qa_file_limit_also_limits_the_subjects(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    path = tmp_path / "two.csv"
    path.write_text("question,answer,subject\nQ1?,A1,Ann\nQ2?,A2,Bob\n", "utf-8")
    data = _qa_file(make_cfg, path, "data.limit=1")

    assert [r.subject for r in data.records] == ["Ann"]
    assert data.subjects_to_forget == ("Ann",)


def test_qa_file_reads_a_csv_with_byte_order_mark(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("\ufeffquestion,answer\nQ?,A\n", "utf-8")

    assert _qa_file(make_cfg, path).records[0].question == "Q?"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("no_answer.csv", "question,reply\nQ?,A\n", r"no_answer\.csv: missing column 'answer'"),
        ("empty.csv", "question,answer\nQ1?,A1\nQ2?,  \n", r"empty\.csv, line 3: empty 'answer'"),
        (
            "dup.jsonl",
            '{"id": "x", "question": "Q1?", "answer": "A"}\n'
            '{"id": "x", "question": "Q2?", "answer": "B"}\n',
            r"dup\.jsonl, line 2: duplicate id 'x'",
        ),
        (
            "role.jsonl",
            '{"question": "Q?", "answer": "A", "role": "test"}\n',
            r"role\.jsonl, line 1: unknown role 'test'",
        ),
        (
            "both.csv",
            "question,answer,role,split\nQ?,A,forget,retain\n",
            r"both\.csv, line 2: column role is 'forget' but its old name split says 'retain'",
        ),
        (
            "broken.jsonl",
            '{"question": "Q?", "answer": "A"}\n{"question": "Q2?", \n',
            r"broken\.jsonl, line 2: not valid JSON",
        ),
        ("qa.txt", "Q? A\n", r"qa\.txt: unsupported file type '\.txt'"),
        (
            "flag.csv",
            "question,answer,is_correct\nQ?,A,maybe\n",
            r"flag\.csv, line 2: is_correct must be True or False",
        ),
    ],
)
def test_qa_file_errors_name_the_file_the_line_and_the_problem(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    with pytest.raises(DataError, match=message):
        _qa_file(make_cfg, path)


def test_qa_file_missing_path(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.csv: no such file"):
        _qa_file(make_cfg, tmp_path / "absent.csv")
