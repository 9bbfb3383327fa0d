"""Anti-samples: (paraphrased question q*, wrong answer ā, misleading rationale r) per forget fact.

Generation is batched across questions and candidates, every filter decision is counted, and the
result is cached on disk by a hash of what shaped it, so a sweep over training knobs reuses it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.cache import cached_json, files_fingerprint, fingerprint
from benchmarks.data.records import QARecord
from benchmarks.evaluation.generation import generate
from benchmarks.evaluation.leak import Embedder, LeakTest, default_embedder
from unstar import prompts
from unstar.filters import (
    Yield,
    judge_paraphrases,
    judge_rationales,
    judge_wrong_answers,
    mask_subject,
)


@dataclass(frozen=True)
class AntiSample:
    """One training example: ask ``question``, answer ``wrong_answer`` and justify it."""

    record_id: str
    question: str
    wrong_answer: str
    rationale: str | None
    kind: str  # original | paraphrase | harder
    iteration: int = 0

    @property
    def completion(self) -> str:
        return f"{self.wrong_answer}. {self.rationale}" if self.rationale else self.wrong_answer


@dataclass
class GenerationReport:
    """Filter yields and fallbacks of one generation, logged as run metrics."""

    paraphrase: Yield = field(default_factory=Yield)
    wrong_answer: Yield = field(default_factory=Yield)
    rationale: Yield = field(default_factory=Yield)
    fallback_records: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "paraphrase": self.paraphrase.as_dict(),
            "wrong_answer": self.wrong_answer.as_dict(),
            "rationale": self.rationale.as_dict(),
            "fallback_wrong_answers": {
                "records": len(self.fallback_records),
                "ids": self.fallback_records,
            },
        }


class AntiSampleGenerator:
    """Generates and filters candidates with ``model`` (the model being unlearned, by default)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        cfg: Any,
        leak_test: LeakTest,
        seed: int,
    ) -> None:
        self.model, self.tokenizer, self.cfg, self.leak_test, self.seed = (
            model,
            tokenizer,
            cfg,
            leak_test,
            seed,
        )
        self.report = GenerationReport()

    @property
    def embedder(self) -> Embedder | None:
        return default_embedder() if self.leak_test.use_embedding else None

    def _sample(
        self, prompts_: Sequence[str], n: int, max_new_tokens: int, desc: str
    ) -> list[list[str]]:
        outputs = generate(
            self.model,
            self.tokenizer,
            prompts_,
            max_new_tokens=max_new_tokens,
            batch_size=self.cfg.generation_batch_size,
            temperature=self.cfg.temperature if n > 1 else 0.0,
            num_samples=n,
            seed=self.seed,
            stop_strings=["\n"],
            desc=desc,
        )
        return [[prompts.first_line(text) for text in texts] for texts in outputs]

    def _budget(self, texts: Sequence[str], floor: int) -> int:
        """Tokens to sample for rewrites of ``texts``: ``floor``, or half as many again as the
        longest of them where that is more, so a long answer's wrong answers are not cut off."""
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        return max(floor, max(lengths, default=0) * 3 // 2)

    def paraphrases(
        self, records: Sequence[QARecord], template: str = prompts.PARAPHRASE
    ) -> list[list[str]]:
        """Accepted paraphrases per record (none when ``paraphrase`` is off)."""
        if not self.cfg.paraphrase or not records:
            return [[] for _ in records]
        candidates = self._sample(
            [template.format(question=r.question) for r in records],
            self.cfg.n_paraphrases,
            self._budget([r.question for r in records], 40),
            "unstar: paraphrase",
        )
        kept = []
        for record, options in zip(records, candidates, strict=True):
            decisions = (
                judge_paraphrases(
                    record.question,
                    record.answer,
                    record.subject,
                    options,
                    embedder=self.embedder,
                    min_similarity=self.cfg.paraphrase_min_similarity,
                    leak_test=self.leak_test,
                )
                if self.cfg.filter
                else [None if o else "empty" for o in options]
            )
            self.report.paraphrase.add(decisions)
            kept.append(
                [o for o, d in zip(options, decisions, strict=True) if d is None][
                    : self.cfg.max_paraphrases
                ]
            )
        return kept

    def wrong_answers(
        self, records: Sequence[QARecord], pool: Sequence[QARecord]
    ) -> list[list[str]]:
        """Accepted wrong answers per record; too few → answers of similar questions in ``pool``."""
        prompts_ = [
            prompts.WRONG_ANSWER.format(question=r.question, answer=r.answer) for r in records
        ]
        candidates = self._sample(
            prompts_,
            self.cfg.n_wrong,
            self._budget([r.answer for r in records], 12),
            "unstar: wrong answers",
        )
        # The facts the user named: those to forget and the same persons' facts to keep.
        named = {r.answer for r in pool if r.role in ("forget", "forget_facts_retained")}
        kept = []
        for record, options in zip(records, candidates, strict=True):
            options = [o.rstrip(".") for o in options]
            decisions = (
                judge_wrong_answers(
                    record.answer, options, self.leak_test, sorted(named - {record.answer})
                )
                if self.cfg.filter
                else [None if o else "empty" for o in options]
            )
            self.report.wrong_answer.add(decisions)
            accepted = [o for o, d in zip(options, decisions, strict=True) if d is None][
                : self.cfg.max_wrong
            ]
            if len(accepted) < self.cfg.min_wrong:
                accepted += self._fallback(
                    record, pool, self.cfg.min_wrong - len(accepted), accepted, named
                )
                self.report.fallback_records.append(record.id)
            kept.append(accepted)
        return kept

    def _fallback(
        self,
        record: QARecord,
        pool: Sequence[QARecord],
        needed: int,
        have: list[str],
        named: Collection[str] = (),
    ) -> list[str]:
        """Answers of the most similar questions about other, kept subjects (birthplaces for a
        birthplace); never another forget answer, which training would reinforce, not even as
        the answer of a kept question that shares it (answer-sharing retain)."""
        others = [
            r
            for r in pool
            if r.subject != record.subject and r.role != "forget" and r.answer != record.answer
        ]
        if self.embedder:
            sims = self.embedder.cosine(
                [mask_subject(record.question, record.subject)] * len(others),
                [mask_subject(r.question, r.subject) for r in others],
            )
            others = [others[i] for i in np.argsort(-sims)]
        chosen: list[str] = []
        for other in others:
            if len(chosen) == needed:
                break
            if (
                other.answer not in have + chosen
                and not judge_wrong_answers(
                    record.answer,
                    [other.answer],
                    self.leak_test,
                    sorted(set(named) - {record.answer}),
                )[0]
            ):
                chosen.append(other.answer)
        return chosen

    def rationales(self, pairs: Sequence[tuple[str, str, str]]) -> list[str | None]:
        """A misleading one-sentence rationale per (question, wrong answer, true answer), or None."""
        if not self.cfg.rationale or not pairs:
            return [None] * len(pairs)
        prompts_ = [prompts.RATIONALE.format(question=q, answer=wrong) for q, wrong, _ in pairs]
        texts = [t[0] for t in self._sample(prompts_, 1, 48, "unstar: rationales")]
        decisions = judge_rationales(
            [true for _, _, true in pairs], [wrong for _, wrong, _ in pairs], texts, self.leak_test
        )
        self.report.rationale.add(decisions)
        return [t if d is None else None for t, d in zip(texts, decisions, strict=True)]

    def build(
        self,
        records: Sequence[QARecord],
        questions: Sequence[list[tuple[str, str]]],
        pool: Sequence[QARecord],
        iteration: int,
    ) -> list[AntiSample]:
        """Anti-samples for each record's (question, kind) list, one per accepted wrong answer."""
        wrong = self.wrong_answers(records, pool)
        drafts = [
            (record, q, kind, a)
            for record, asked, answers in zip(records, questions, wrong, strict=True)
            for q, kind in asked
            for a in answers
        ]
        rationales = self.rationales([(q, a, record.answer) for record, q, _, a in drafts])
        return [
            AntiSample(record.id, q, a, r, kind, iteration)
            for (record, q, kind, a), r in zip(drafts, rationales, strict=True)
        ]

    def initial(self, records: Sequence[QARecord], pool: Sequence[QARecord]) -> list[AntiSample]:
        """Iteration 0: the original question (if configured) and accepted paraphrases of each."""
        paraphrases = self.paraphrases(records)
        questions = [
            ([(r.question, "original")] if self.cfg.include_original else [])
            + [(p, "paraphrase") for p in ps]
            for r, ps in zip(records, paraphrases, strict=True)
        ]
        return self.build(records, questions, pool, iteration=0)


def generation_code() -> str:
    """A hash of the code that turns knobs into anti-samples: samples made by an older prompt or
    filter are not reused."""
    here = Path(__file__).parent
    return files_fingerprint(
        here, (here / n for n in ("prompts.py", "filters.py", "antisamples.py"))
    )


def cached_initial(
    generator: AntiSampleGenerator,
    records: Sequence[QARecord],
    pool: Sequence[QARecord],
    cache: Path,
    key_parts: Any,
) -> tuple[list[AntiSample], dict[str, Any], bool]:
    """Iteration-0 anti-samples and their report, from the cache when the same inputs made them."""
    key = fingerprint(
        key_parts, generation_code(), [asdict(r) for r in records], [r.id for r in pool]
    )

    def generate() -> dict[str, Any]:
        samples = generator.initial(records, pool)
        return {"samples": [asdict(s) for s in samples], "report": generator.report.as_dict()}

    saved, reused = cached_json(cache / "antisamples" / f"{key}.json", generate)
    return [AntiSample(**s) for s in saved["samples"]], saved["report"], reused
