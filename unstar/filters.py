"""Accept/reject decisions for generated candidates; each rejection says why, for yield metrics."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.evaluation.leak import Embedder, LeakTest, key_words, normalise

#: A wrong answer may have this many words, or twice the true answer's where that is more
#: ("The history of Florence from 1527 to 1538" has wrong answers as long).
MAX_ANSWER_WORDS = 6
MIN_RATIONALE_WORDS = 5


@dataclass
class Yield:
    """How many candidates a stage generated, accepted, and rejected for which reason."""

    generated: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, decisions: Sequence[str | None]) -> None:
        self.generated += len(decisions)
        self.accepted += sum(d is None for d in decisions)
        self.rejected.update(d for d in decisions if d is not None)

    def as_dict(self) -> dict[str, object]:
        return {
            "generated": self.generated,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
        }


def mentions(subject: str, text: str) -> bool:
    """Whether the text names the subject (any of its key words, e.g. the surname)."""
    words = set(normalise(text).split())
    return any(w in words for w in key_words(normalise(subject)) if len(w) >= 3)


def mask_subject(text: str, subject: str) -> str:
    """The text with the subject's names replaced by "someone": what a question asks, not whom it
    is about. Unmasked, the shared name dominates the embedding ("Who was Marie Curie?" is 0.88
    from "In which year was Marie Curie born?"; masked, 0.50)."""
    for name in sorted({subject, *re.findall(r"[\w'’-]+", subject)}, key=len, reverse=True):
        if len(name) >= 3:
            text = re.sub(rf"\b{re.escape(name)}\b", "someone", text, flags=re.IGNORECASE)
    return text


def judge_paraphrases(
    question: str,
    answer: str,
    subject: str,
    candidates: Sequence[str],
    *,
    embedder: Embedder | None,
    min_similarity: float,
    leak_test: LeakTest,
) -> list[str | None]:
    """None for a kept paraphrase, else the reason: it must be a new question on the same subject,
    close in meaning to the original (embedding cosine, subject masked in both), and must not
    contain the answer, nor a part of a multi-part one ("Where in Vienna is Karl Hartl buried?"
    for "Hietzing cemetery, Vienna")."""
    decisions: list[str | None] = []
    seen = {normalise(question)}
    similarities = (
        embedder.cosine(
            [mask_subject(question, subject)] * len(candidates),
            [mask_subject(c, subject) for c in candidates],
        )
        if embedder and candidates
        else [1.0] * len(candidates)
    )
    leaks = leak_test.reasons([answer] * len(candidates), list(candidates))
    for candidate, similarity, leak in zip(candidates, similarities, leaks, strict=True):
        if not candidate.endswith("?") or len(candidate.split()) < 3:
            decisions.append("not_a_question")
        elif subject and not mentions(subject, candidate):
            decisions.append("no_subject")
        elif normalise(candidate) in seen:
            decisions.append("duplicate")
        elif similarity < min_similarity:
            decisions.append("too_far")
        elif leak:
            decisions.append("gives_answer")
        elif leak_test.states_part(answer, candidate):
            decisions.append("gives_part")
        else:
            decisions.append(None)
            seen.add(normalise(candidate))
    return decisions


def judge_wrong_answers(
    answer: str,
    candidates: Sequence[str],
    leak_test: LeakTest,
    other_answers: Sequence[str] = (),
) -> list[str | None]:
    """None for a usable wrong answer; reject empty, long, repeated and leaking ones, those that
    state a part of a multi-part true answer ("Vienna" for "Hietzing cemetery, Vienna"), and the
    true answer of another fact to forget or keep ("Radium" for the element Curie named after
    Poland): training would teach a forgotten fact back or overwrite a kept one."""
    leaks = leak_test.reasons([answer] * len(candidates), list(candidates))
    longest = max(MAX_ANSWER_WORDS, 2 * len(answer.split()))
    decisions: list[str | None] = []
    seen: set[str] = set()
    for candidate, leak in zip(candidates, leaks, strict=True):
        if not normalise(candidate):
            decisions.append("empty")
        elif len(candidate.split()) > longest:
            decisions.append("too_long")
        elif normalise(candidate) in seen:
            decisions.append("duplicate")
        elif leak:
            decisions.append(f"leak_{leak}")
        elif leak_test.states_part(answer, candidate):
            decisions.append("leak_part")
        elif any(leak_test.string_leak(other, candidate) for other in other_answers):
            decisions.append("answer_of_other_fact")
        else:
            decisions.append(None)
            seen.add(normalise(candidate))
    return decisions


def judge_rationales(
    answers: Sequence[str],
    wrong_answers: Sequence[str],
    rationales: Sequence[str],
    leak_test: LeakTest,
) -> list[str | None]:
    """None for a rationale that argues for the wrong answer in a sentence and never states the
    true one, nor a part of a multi-part one; else why it was dropped."""
    leaks = leak_test.reasons(list(answers), list(rationales))
    decisions: list[str | None] = []
    for answer, wrong, rationale, leak in zip(
        answers, wrong_answers, rationales, leaks, strict=True
    ):
        if len(normalise(rationale).split()) < MIN_RATIONALE_WORDS:
            decisions.append("too_short")
        elif leak:
            decisions.append(f"leak_{leak}")
        elif leak_test.states_part(answer, rationale):
            decisions.append("leak_part")
        elif not leak_test.string_leak(wrong, rationale):
            decisions.append("not_about_wrong_answer")
        else:
            decisions.append(None)
    return decisions
