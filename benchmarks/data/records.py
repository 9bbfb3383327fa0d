"""The canonical QA record every loader produces and every method and metric consumes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: What a record is for. ``retain`` trains retain terms; ``holdout`` is never trained on, not even
#: by the target (membership inference tells forget from holdout); the rest are evaluated.
#: ``answer_sharing_retain`` asks about other subjects whose true answer is a forget answer
#: ("What is the capital of Austria?" when Mozart's death city is forgotten): training on wrong
#: answers can suppress an answer string everywhere, which other retain questions do not catch.
#: ``real_authors`` and ``world_facts`` are TOFU's two general-knowledge sets, kept apart because
#: TOFU's model utility scores each on its own.
RECORD_ROLES = (
    "forget",
    "retain",
    "hard_retain",
    "answer_sharing_retain",
    "general_retain",
    "forget_facts_retained",
    "holdout",
    "real_authors",
    "world_facts",
)


class DataError(ValueError):
    """A data file or dataset definition is malformed; the message says where and what to fix."""


@dataclass(frozen=True)
class QARecord:
    """One question about one subject, with what truth ratio and paraphrase attacks need.

    ``paraphrased_answer`` is the answer reworded (TOFU's ``paraphrased_answer``): the truth
    ratio compares the wrong answers against it rather than against the answer the model was
    taught word for word; None where a dataset has none."""

    id: str
    subject: str
    question: str
    answer: str
    role: str
    paraphrases: tuple[str, ...] = ()
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_answer: str | None = None

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

    def require_subjects(self, method: str) -> None:
        """Refuse, for a method that names or renames the subject of each forget question, data
        whose forget records have none (renaming "" would splice the substitute name between
        every character)."""
        missing = [r.id for r in self.forget if not r.subject.strip()]
        if missing:
            raise DataError(
                f"method={method} names the subject of each forget question, but "
                f"{len(missing)} forget records of {self.name!r} have none (first: "
                f"{missing[0]!r}); give the data subjects (data=qa_file: a subject column, see "
                "data.subject_column) or choose a method that needs none"
            )

    def with_records(self, records: Iterable[QARecord]) -> UnlearningData:
        return UnlearningData(self.name, tuple(records), self.subjects_to_forget)
