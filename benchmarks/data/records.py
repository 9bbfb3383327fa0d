"""The canonical QA record every loader produces and every method and metric consumes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: What a record is for. ``retain`` trains retain terms; ``holdout`` is never trained on, not even
#: by the target (membership inference tells forget from holdout); the rest are evaluated.
RECORD_ROLES = (
    "forget",
    "retain",
    "hard_retain",
    "general_retain",
    "forget_facts_retained",
    "holdout",
)


class DataError(ValueError):
    """A data file or dataset definition is malformed; the message says where and what to fix."""


@dataclass(frozen=True)
class QARecord:
    """One question about one subject, with what truth ratio and paraphrase attacks need."""

    id: str
    subject: str
    question: str
    answer: str
    role: str
    paraphrases: tuple[str, ...] = ()
    perturbed_answers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in RECORD_ROLES:
            raise DataError(
                f"record {self.id!r}: unknown role {self.role!r}; use one of {RECORD_ROLES}"
            )


@dataclass(frozen=True)
class UnlearningData:
    """Every record of one unlearning task; ``with_role`` picks the records of one role."""

    name: str
    records: tuple[QARecord, ...]
    subjects_to_forget: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for record in self.records:
            if record.id in seen:
                raise DataError(f"dataset {self.name!r}: duplicate id {record.id!r}")
            seen.add(record.id)
        if not self.forget:
            raise DataError(f"dataset {self.name!r} has no forget records: nothing to unlearn")

    def with_role(self, name: str) -> list[QARecord]:
        return [r for r in self.records if r.role == name]

    @property
    def forget(self) -> list[QARecord]:
        return self.with_role("forget")

    @property
    def retain(self) -> list[QARecord]:
        return self.with_role("retain")

    def with_records(self, records: Iterable[QARecord]) -> UnlearningData:
        return UnlearningData(self.name, tuple(records), self.subjects_to_forget)
