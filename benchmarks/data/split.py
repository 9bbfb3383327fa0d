"""The dev/test split of what is evaluated: selection (a method's stopping rule, the tuner's
objective) reads the dev half, every reported table the test half, and methods never see a test
question.

The split is per question and deterministic, by the SHA-256 of a fixed salt, the record id and
the question's wording; no RNG state is involved, so every run, seed and machine splits the same
data the same way. The forget questions themselves are not split: they are the forget set, which
every method trains on and may probe.

- Each paraphrase of a forget question goes to ``test`` when its hash is odd, else to ``dev``, on
  its own: adding a paraphrase never moves another, and cutting a record's paraphrases to its dev
  half (what methods get) leaves them all dev. A record's paraphrases usually fall on both sides;
  with one paraphrase (TOFU, WPU) it goes wholly to one. wpu_mini's are written so that every
  forget question has both (tests/test_split.py).
- The records of each other split role (hard_retain, answer_sharing_retain, general_retain,
  forget_facts_retained) are ordered by their hash and dealt alternately to ``test`` and
  ``dev``, so that even a view of a few questions has both halves (``test`` gets the odd one). A
  record's half thus depends on the other records of its role that were loaded: the same data
  config always splits the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from benchmarks.data.records import QARecord, UnlearningData

Part = Literal["dev", "test"]
PARTS: tuple[Part, ...] = ("dev", "test")
#: Changing the salt reshuffles every split: results before and after are not comparable.
SALT = "unstar-bench/dev-test/v1"
#: Record roles whose questions are split record by record (their views ``<role>_dev`` / ``_test``).
SPLIT_ROLES = ("hard_retain", "answer_sharing_retain", "general_retain", "forget_facts_retained")
#: The view of the forget questions' held-out paraphrases (``forget_paraphrased_dev`` / ``_test``).
PARAPHRASED = "forget_paraphrased"
#: Every view that has a dev and a test half.
SPLIT_VIEWS = (PARAPHRASED, *SPLIT_ROLES)


def _digest(record_id: str, question: str) -> bytes:
    return hashlib.sha256(f"{SALT}\0{record_id}\0{question}".encode()).digest()


def part_of(record_id: str, question: str) -> Part:
    """The half a paraphrase of a forget question belongs to."""
    return "test" if _digest(record_id, question)[-1] & 1 else "dev"


def paraphrases_in(record: QARecord, part: Part) -> tuple[str, ...]:
    """A record's paraphrases that fall in ``part``, in the data's order."""
    return tuple(p for p in record.paraphrases if part_of(record.id, p) == part)


def records_in(records: Sequence[QARecord], part: Part) -> list[QARecord]:
    """The records of one split role that fall in ``part``, in the data's order: ordered by hash
    and dealt alternately, test first, so the halves differ in size by at most one."""
    ranked = sorted(records, key=lambda r: (_digest(r.id, r.question), r.id))
    chosen = {r.id for r in ranked[(0 if part == "test" else 1) :: 2]}
    return [r for r in records if r.id in chosen]


def view_name(base: str, part: Part) -> str:
    """``forget_paraphrased`` + ``test`` → ``forget_paraphrased_test``."""
    return f"{base}_{part}"


def parse_view(view: str) -> tuple[str, Part | None]:
    """``hard_retain_dev`` → (``hard_retain``, ``dev``); a view without a half → (view, None)."""
    for part in PARTS:
        base = view.removesuffix(f"_{part}")
        if base != view and base in SPLIT_VIEWS:
            return base, part
    return view, None


def reported(base: str, views: set[str] | frozenset[str]) -> str:
    """The view a reported table reads for ``base``: its test half where it was evaluated, else
    ``base`` itself (a view without halves, or a configuration that evaluates the whole view)."""
    test = view_name(base, "test")
    return test if base in SPLIT_VIEWS and test in views else base


def for_methods(data: UnlearningData) -> UnlearningData:
    """The data a method receives: every record's paraphrases cut to its dev half, and of the
    split roles' records only the dev half, so that no method (its training, probes, attacks,
    stopping rule or UnSTAR's borrowed wrong answers) ever sees a test question. The evaluation
    keeps the full data."""
    dev = {r.id for role in SPLIT_ROLES for r in records_in(data.with_role(role), "dev")}
    return data.with_records(
        replace(r, paraphrases=paraphrases_in(r, "dev")) if r.paraphrases else r
        for r in data.records
        if r.role not in SPLIT_ROLES or r.id in dev
    )
