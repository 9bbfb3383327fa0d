"""``qa_file``: any CSV, JSONL or JSON list with question/answer columns.

Optional columns: ``id``, ``subject``, ``role`` (the record's role: forget, retain, hard_retain,
general_retain, forget_facts_retained, holdout, real_authors or world_facts; default
``data.default_role``; ``split`` is accepted as its old name), ``paraphrases`` and
``perturbed_answers`` (lists, or JSON-encoded lists in a CSV; TOFU's ``perturbed_answer`` is
accepted too), ``paraphrased_answer`` (the answer reworded: the truth ratio's base where
present). A file with an ``is_correct`` column lists one answer per row: the correct row is the
answer, the other rows of the same question its perturbed answers.
A question asked twice (ignoring case and spacing) is dropped if the answer is the same too, and
is an error otherwise. The file is read as ``data.encoding`` (default UTF-8).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from benchmarks.data.loaders import DATASETS
from benchmarks.data.records import RECORD_ROLES, DataError, QARecord, UnlearningData

log = logging.getLogger(__name__)

#: The role column and its old name, still read; a row filling both must agree.
ROLE_COLUMNS = ("role", "split")  # names: keep
LIST_COLUMNS = {
    "paraphrases": ("paraphrases",),
    "perturbed_answers": ("perturbed_answers", "perturbed_answer"),
}


def _decode(path: Path, encoding: str) -> str:
    """The file's text; a decode error names the byte and line and says which option to set.

    ``utf-8`` is read as ``utf-8-sig``, dropping the byte-order mark spreadsheets put first.
    """
    raw = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in {"utf-8", "utf8"} else encoding
    try:
        return raw.decode(codec)
    except LookupError:
        raise DataError(f"data.encoding={encoding!r} is not a known text encoding") from None
    except UnicodeDecodeError as err:
        hint = "utf-16" if raw[:2] in {b"\xff\xfe", b"\xfe\xff"} else "latin-1"
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: not valid {encoding} at byte {err.start} (line {line}): {err.reason}. "
            f"Set data.encoding to the file's encoding, e.g. data.encoding={hint}"
        ) from None


def read_rows(path: Path, encoding: str = "utf-8") -> list[tuple[str, dict[str, Any]]]:
    """Rows of the file, each with where it sits (``line N``) for error messages."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; set data.path to a CSV, JSONL or JSON file")
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".jsonl", ".json"}:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .json")
    text = _decode(path, encoding)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(f"line {reader.line_num}", dict(row)) for row in reader]
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
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
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DataError(f"{path}: expected a JSON list of objects")
    return [(f"item {i}", row) for i, row in enumerate(items)]


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


def _role(row: dict[str, Any], where: str, default: str) -> str:
    """The row's role from the ``role`` column or its old name ``split``, else ``default``."""
    given = {c: str(row[c]).strip() for c in ROLE_COLUMNS if str(row.get(c) or "").strip()}
    if len(set(given.values())) > 1:
        role, old = given.values()
        raise DataError(
            f"{where}: column role is {role!r} but its old name split says {old!r}; keep one"
        )
    role = next(iter(given.values()), default)
    if role not in RECORD_ROLES:
        raise DataError(f"{where}: unknown role {role!r}; use one of {list(RECORD_ROLES)}")
    return role


def _text(row: dict[str, Any], column: str, where: str) -> str:
    value = row.get(column)
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{where}: empty {column!r}")
    return text


def _normal(text: str) -> str:
    """Text compared for duplicates: case and runs of whitespace do not count."""
    return " ".join(text.split()).casefold()


def group_by_correctness(
    rows: list[tuple[str, dict[str, Any]]], q_col: str, a_col: str, path: Path
) -> list[tuple[str, dict[str, Any]]]:
    """Fold one-answer-per-row files into one row per correct answer with perturbed answers."""
    correct: list[tuple[str, dict[str, Any]]] = []
    wrong: dict[str, list[str]] = {}
    first_wrong: dict[str, str] = {}
    for where, row in rows:
        question = _normal(_text(row, q_col, f"{path}, {where}"))
        answer = _text(row, a_col, f"{path}, {where}")
        flag = str(row.get("is_correct", "")).strip().lower()
        if flag not in {"true", "false", "1", "0"}:
            raise DataError(f"{path}, {where}: is_correct must be True or False, got {flag!r}")
        if flag in {"true", "1"}:
            correct.append((where, row))
        else:
            wrong.setdefault(question, []).append(answer.rstrip("."))
            first_wrong.setdefault(question, where)
    answered = {_normal(row[q_col]) for _, row in correct}
    missing = [q for q in wrong if q not in answered]
    if missing:
        raise DataError(
            f"{path}, {first_wrong[missing[0]]}: question {missing[0]!r} has no row with "
            "is_correct=True"
        )
    return [
        (where, {**row, "perturbed_answers": wrong.get(_normal(row[q_col]), [])})
        for where, row in correct
    ]


def _drop_repeats(records: list[QARecord], wheres: list[str], path: Path) -> list[int]:
    """Indices of the records to keep: a repeated question and answer is dropped with a warning,
    the same question with another answer or role is an error naming both rows."""
    first: dict[str, int] = {}
    kept, repeats = [], []
    for index, record in enumerate(records):
        earlier = first.setdefault(_normal(record.question), index)
        if earlier == index:
            kept.append(index)
            continue
        other = records[earlier]
        for field, mine, theirs in (
            ("answer", _normal(record.answer), _normal(other.answer)),
            ("role", record.role, other.role),
        ):
            if mine != theirs:
                raise DataError(
                    f"{path}, {wheres[index]} and {wheres[earlier]}: the same question "
                    f"{record.question!r} with different {field}s "
                    f"({getattr(record, field)!r} and {getattr(other, field)!r}); keep one row"
                )
        repeats.append(f"{wheres[index]} repeats {wheres[earlier]}")
    if repeats:
        log.warning(
            "%s: dropped %d rows that repeat an earlier question and answer (%s)",
            path,
            len(repeats),
            "; ".join(repeats[:5]) + ("; ..." if len(repeats) > 5 else ""),
        )
    return kept


@DATASETS.register("qa_file")
def load_qa_file(cfg: Any) -> UnlearningData:
    path = Path(cfg.path).expanduser()
    rows = read_rows(path, cfg.encoding)
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
        rows = group_by_correctness(rows, q_col, a_col, path)

    records, wheres = [], []
    for index, (where, row) in enumerate(rows):
        wheres.append(where)
        where = f"{path}, {where}"
        role = _role(row, where, cfg.default_role)
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
                role=role,
                **lists,
                paraphrased_answer=str(row.get("paraphrased_answer") or "").strip() or None,
            )
        )
    kept = _drop_repeats(records, wheres, path)
    records, wheres = [records[i] for i in kept], [wheres[i] for i in kept]
    seen: set[str] = set()
    for record, where in zip(records, wheres, strict=True):
        if record.id in seen:
            raise DataError(f"{path}, {where}: duplicate id {record.id!r}")
        seen.add(record.id)
    limit = cfg.get("limit")
    records = records[:limit] if limit else records
    return UnlearningData(
        name=f"qa_file/{path.name}",
        records=tuple(records),
        subjects_to_forget=tuple(
            sorted({r.subject for r in records if r.role == "forget" and r.subject})
        ),
    )
