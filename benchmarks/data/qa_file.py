"""``qa_file``: any CSV, JSONL or JSON list with question/answer columns.

Optional columns: ``id``, ``subject``, ``split`` (default ``data.default_split``),
``paraphrases`` and ``perturbed_answers`` (lists, or JSON-encoded lists in a CSV; TOFU's
``perturbed_answer`` is accepted too). A file with an ``is_correct`` column lists one answer per
row: the correct row is the answer, the other rows of the same question its perturbed answers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.data import DATASETS
from benchmarks.data.records import RECORD_SPLITS, DataError, QARecord, UnlearningData

LIST_COLUMNS = {
    "paraphrases": ("paraphrases",),
    "perturbed_answers": ("perturbed_answers", "perturbed_answer"),
}


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Rows of the file, each with where it sits (``line N``) for error messages.

    ``utf-8-sig`` drops the byte-order mark spreadsheet programs put before the first column name.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file; set data.path to a CSV, JSONL or JSON file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            return [(f"line {reader.line_num}", dict(row)) for row in reader]
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text("utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {row!r:.60}")
            rows.append((f"line {number}", row))
        return rows
    if suffix == ".json":
        try:
            items = json.loads(path.read_text("utf-8-sig"))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise DataError(f"{path}: expected a JSON list of objects")
        return [(f"item {i}", row) for i, row in enumerate(items)]
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .json")


def _as_list(value: Any, where: str, column: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: column {column!r} must be a JSON list of strings") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: column {column!r} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _text(row: dict[str, Any], column: str, where: str) -> str:
    value = row.get(column)
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{where}: empty {column!r}")
    return text


def _group_by_correctness(
    rows: list[tuple[str, dict[str, Any]]], q_col: str, a_col: str, path: Path
):
    """Fold one-answer-per-row files into one row per question with perturbed answers."""
    grouped: dict[str, tuple[str, dict[str, Any]]] = {}
    wrong: dict[str, list[str]] = {}
    for where, row in rows:
        question = _text(row, q_col, f"{path}, {where}")
        answer = _text(row, a_col, f"{path}, {where}")
        flag = str(row.get("is_correct", "")).strip().lower()
        if flag not in {"true", "false", "1", "0"}:
            raise DataError(f"{path}, {where}: is_correct must be True or False, got {flag!r}")
        if flag in {"true", "1"}:
            if question in grouped:
                raise DataError(f"{path}, {where}: second correct answer for {question!r}")
            grouped[question] = (where, row)
        else:
            wrong.setdefault(question, []).append(answer.rstrip("."))
    missing = sorted(set(wrong) - set(grouped))
    if missing:
        raise DataError(f"{path}: question {missing[0]!r} has no row with is_correct=True")
    return [
        (where, {**row, "perturbed_answers": wrong.get(question, [])})
        for question, (where, row) in grouped.items()
    ]


@DATASETS.register("qa_file")
def load_qa_file(cfg: Any) -> UnlearningData:
    path = Path(cfg.path).expanduser()
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    q_col, a_col = cfg.question_column, cfg.answer_column
    columns = set().union(*(row.keys() for _, row in rows))
    absent = [c for c in (q_col, a_col) if c not in columns]
    if absent:
        raise DataError(
            f"{path}: missing column {absent[0]!r}; found {sorted(columns)}. "
            "Set data.question_column / data.answer_column to the right names."
        )
    if "is_correct" in columns:
        rows = _group_by_correctness(rows, q_col, a_col, path)

    records = []
    for index, (where, row) in enumerate(rows):
        where = f"{path}, {where}"
        split = str(row.get("split") or cfg.default_split).strip()
        if split not in RECORD_SPLITS:
            raise DataError(f"{where}: unknown split {split!r}; use one of {list(RECORD_SPLITS)}")
        lists = {
            key: next((_as_list(row[c], where, c) for c in names if c in row), ())
            for key, names in LIST_COLUMNS.items()
        }
        records.append(
            QARecord(
                id=str(row.get("id") or f"{path.stem}-{index}"),
                subject=str(row.get(cfg.subject_column) or "").strip(),
                question=_text(row, q_col, where),
                answer=_text(row, a_col, where),
                split=split,
                **lists,
            )
        )
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.id in seen:
            raise DataError(f"{path}, {rows[index][0]}: duplicate id {record.id!r}")
        seen[record.id] = index
    limit = cfg.get("limit")
    records = records[:limit] if limit else records
    return UnlearningData(
        name=f"qa_file/{path.name}",
        records=tuple(records),
        subjects_to_forget=tuple(
            sorted({r.subject for r in records if r.split == "forget" and r.subject})
        ),
    )
