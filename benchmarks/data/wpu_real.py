"""``wpu_real``: WPU-style tasks built from the real WPU questions in ``../shared/external``.

The file (``question,answer,is_correct``: each question's true answer and about nine wrong ones)
names no subject, so each question's person is read from its wording (:func:`persons_of`).
Persons keep the file's order; ``forget_<n>_<k>`` forgets the k-th run of n persons (``forget_2_1``
the first two, ``forget_2_2`` the next two, ...: disjoint for one n) and the last
``data.n_holdout_persons`` persons are the holdout, never trained on. From the other persons'
questions come, in this order and each question at most once:

- ``answer_sharing_retain``: questions whose true answer is a forget answer (or one part or alias
  of a multi-part one: ``Vienna`` of ``Hietzing cemetery, Vienna``), and TOFU world facts whose
  answer is; training on wrong answers can suppress an answer string everywhere;
- ``hard_retain``: per forget question, the other persons' question of the same relation (the most
  similar wording once the person is masked: ``Where was X born?`` for ``Where was Y born?``).
  WPU's hard retain asks about entities related to the forgotten persons, which this file does
  not have: same-relation facts of other persons are what it offers;
- ``retain``: the rest, round-robin over persons (``data.n_retain``).

General retain is the TOFU world facts not used above. The file's wrong answers are each
question's ``perturbed_answers``, less those that state the true answer (:func:`usable_wrong`). There are no paraphrases: the job has the base model write them
(``data.generate_paraphrases``, :mod:`benchmarks.heldout`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.data.answers import normal_answer, shares_answer
from benchmarks.data.loaders import DATASETS
from benchmarks.data.qa_file import group_by_correctness, read_rows
from benchmarks.data.records import DataError, QARecord, UnlearningData

log = logging.getLogger(__name__)

#: Relative data paths are read from here, the directory that holds ``run.py``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
FORGET_SET = re.compile(r"forget_(\d+)_(\d+)")

# -- whom a question is about ------------------------------------------------------------------

#: A title in quotes ('Der Überläufer') is no name.
_QUOTED = re.compile(r"(?<!\w)['‘\"“][^'’\"”]+['’\"”](?!\w)")
#: Capitalised only because they open the question.
_OPENERS = frozenset(
    "what which who whom whose where when why how in on at for from to with during did does do "
    "was were is are has have had can could name besides against of by after before under "
    "since among as the a an".split()
)
#: Lower-case words inside a name: Hartmann von Aue, José Batlle y Ordóñez, Catherine of Bohemia.
_PARTICLES = frozenset("von van zu y de del della di da du der den la le of the bin ibn al".split())
#: After a comma these continue a name: Waleran III, Duke of Limburg; Philip Stanhope, 5th Earl.
_TITLES = frozenset(
    "duke count earl baron prince princess king queen lord lady duchess countess marquess "
    "viscount emperor empress graf".split()
)
#: A run with one of these words names an institution, prize, event or group, not a person
#: ("Saint Louis University", "Nobel Prize", "World War II", "NFL Championship Game").
_NOT_PERSON = frozenset(
    "university prize award institute academy college school museum library orchestra party war "
    "championship championships olympics games game cup league society foundation initiative "
    "parliament congress army navy convention exposition department company act order "
    "association festival theatre club gallery medal".split()
)
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")
#: An acronym (BMW, NFL, DVDs) is no part of a name; a Roman numeral (Waleran III) is.
_ACRONYM = re.compile(r"[A-Z]{2,}s?")
_ROMAN = re.compile(r"[IVXLC]+")


def _possessive(word: str) -> tuple[str, bool]:
    for ending in ("'s", "’s", "'", "’"):
        if word.endswith(ending):
            return word[: -len(ending)], True
    return word, False


def _is_name_word(word: str) -> bool:
    if _ACRONYM.fullmatch(word) and not _ROMAN.fullmatch(word):
        return False
    return word[:1].isupper()


def name_spans(question: str) -> list[str]:
    """The runs of capitalised words that could name a person, in order; a possessive, a comma
    (unless a title follows: ``Frederick I, Duke of Lorraine``) or a lower-case word ends one."""
    words = _QUOTED.sub(" ; ", question.rstrip("?.! ")).split()
    if words and words[0].lower() in _OPENERS:
        words = words[1:]
    spans: list[str] = []
    run: list[str] = []

    def close() -> None:
        while run and run[-1].lower() in _PARTICLES:
            run.pop()
        if run:
            spans.append(" ".join(run))
        run.clear()

    for i, raw in enumerate(words):
        word, possessive = _possessive(raw.strip("();:"))
        comma = word.endswith(",")
        word = word.rstrip(",")
        if word and _is_name_word(word):
            run.append(word)
            if possessive:
                close()
            elif comma:
                following = [w.lower().strip(",") for w in words[i + 1 : i + 3]]
                titled = following[:1] and following[0] in _TITLES
                ordinal = len(following) == 2 and _ORDINAL.fullmatch(following[0])
                if titled or (ordinal and _possessive(following[1])[0] in _TITLES):
                    run[-1] += ","
                else:
                    close()
        elif run and (
            (not comma and word.lower() in _PARTICLES)
            or (run[-1].endswith(",") and _ORDINAL.fullmatch(word))
        ):
            run.append(word)
        else:
            close()
    close()
    return [s for s in spans if not {w.lower().strip(",") for w in s.split()} & _NOT_PERSON]


def _key(span: str) -> tuple[str, ...]:
    """A span as compared: its name words, case folded, without particles and commas."""
    words = (w.strip(",").casefold() for w in span.split())
    return tuple(w for w in words if w and w not in _PARTICLES)


def _refers(short: tuple[str, ...], full: tuple[str, ...]) -> bool:
    """Whether ``short`` is a shorter way to name ``full``: its last words (Varchi of Benedetto
    Varchi, Duke of Lorraine of Frederick I, Duke of Lorraine) or its first two or more (Jorge
    Semprún of Jorge Semprún Maura)."""
    n = len(short)
    return n < len(full) and (full[-n:] == short or (n >= 2 and full[:n] == short))


def persons_of(questions: Sequence[str], wheres: Sequence[str]) -> list[str]:
    """Each question's person, as the longest name the file gives them.

    A question's candidates are its name runs (:func:`name_spans`), each read as the longest name
    it abbreviates that the file uses at least twice. A person is named in two questions at least;
    a candidate that is the only one in some question ("Where was Theopompus born?") comes first,
    and of several the one named in more questions wins (Theopompus over Isocrates). A question
    naming no such person, or two equally, raises a DataError naming its row: add a ``subject``
    column for such rows.
    """
    spans = [name_spans(q) for q in questions]
    shown: dict[tuple[str, ...], str] = {}
    for run in spans:
        for span in run:
            shown.setdefault(_key(span), span)
    used = Counter(key for run in spans for key in {_key(s) for s in run})

    def full_name(key: tuple[str, ...]) -> tuple[str, ...]:
        while True:
            longer = {k for k in used if used[k] >= 2 and _refers(key, k)}
            longest = {k for k in longer if not any(_refers(k, m) for m in longer)}
            if len(longest) != 1:
                return key
            key = longest.pop()

    candidates = [{full_name(_key(s)) for s in run} for run in spans]
    named = Counter(key for found in candidates for key in found)
    anchored = {next(iter(found)) for found in candidates if len(found) == 1}
    persons = []
    for question, where, found in zip(questions, wheres, candidates, strict=True):
        often = {k for k in found if named[k] >= 2}
        chosen = (often & anchored) or often
        best = max((named[k] for k in chosen), default=0)
        top = sorted(k for k in chosen if named[k] == best)
        if len(top) != 1:
            names = [shown[k] for k in top] or [shown[k] for k in found] or ["none"]
            raise DataError(
                f"{where}: cannot tell whom {question!r} is about (candidates: "
                f"{', '.join(names)}); add a 'subject' column naming the person of such rows"
            )
        persons.append(shown[top[0]])
    return persons


# -- building the task -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One question of the file with its person, true answer and wrong answers."""

    id: str
    person: str
    question: str
    answer: str
    wrong: tuple[str, ...]

    def record(self, role: str) -> QARecord:
        return QARecord(
            id=self.id,
            subject=self.person,
            question=self.question,
            answer=self.answer,
            role=role,
            perturbed_answers=self.wrong,
        )


def data_path(value: str, what: str) -> Path:
    """``value`` as a path, relative ones from the project root; a missing file says what to do."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else PROJECT_ROOT / path
    if not path.is_file():
        raise DataError(
            f"data=wpu_real: {what} {path} not found. The config reads the real data from "
            "../shared/external/ beside the project root (a checkout with the shared data "
            "folder beside it); elsewhere pass the files: data.path=FILE.csv (question, answer, "
            "is_correct) and data.world_facts=FILE.jsonl, or data.world_facts=null"
        )
    return path


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.casefold())) or "x"


def usable_wrong(answer: str, wrong: Sequence[str]) -> tuple[str, ...]:
    """The wrong answers that are wrong: each cut at its first line break (the file's were written
    by a model, which sometimes chattered on), without those that state the true answer ("Swiss.
    I see what the question did there" for "Swiss", "Aki Kaurismäki, Michael Caine" for "Aki
    Kaurismäki"), which would score the truth as a wrong answer."""
    truth = f" {normal_answer(answer)} "
    kept = (w.split("\n", 1)[0].strip().rstrip(".").strip() for w in wrong)
    return tuple(dict.fromkeys(w for w in kept if w and truth not in f" {normal_answer(w)} "))


def read_facts(path: Path) -> list[Fact]:
    """The file's questions with their persons (a ``subject`` column, where filled, names them)
    and their usable wrong answers (:func:`usable_wrong`)."""
    rows = group_by_correctness(read_rows(path), "question", "answer", path)
    if not rows:
        raise DataError(f"{path}: no question has a row with is_correct=True")
    questions = [str(row["question"]).strip() for _, row in rows]
    given = [str(row.get("subject") or "").strip() for _, row in rows]
    unnamed = [i for i, subject in enumerate(given) if not subject]
    derived = dict(
        zip(
            unnamed,
            persons_of([questions[i] for i in unnamed], [f"{path}, {rows[i][0]}" for i in unnamed]),
            strict=True,
        )
    )
    persons = [given[i] or derived[i] for i in range(len(rows))]
    counts: Counter[str] = Counter()
    facts = []
    for (_, row), question, person in zip(rows, questions, persons, strict=True):
        counts[person] += 1
        facts.append(
            Fact(
                id=f"wpu-real-{_slug(person)}-{counts[person]}",
                person=person,
                question=question,
                answer=str(row["answer"]).strip(),
                wrong=usable_wrong(row["answer"], row["perturbed_answers"]),
            )
        )
    return facts


def world_facts(path: Path) -> list[QARecord]:
    """TOFU's world facts (question, answer, perturbed_answer) as general-retain records."""
    records = []
    for index, (where, row) in enumerate(read_rows(path)):
        question, answer = (str(row.get(c) or "").strip() for c in ("question", "answer"))
        if not question or not answer:
            raise DataError(f"{path}, {where}: a world fact needs a question and an answer")
        wrong = row.get("perturbed_answer") or []
        records.append(
            QARecord(
                id=f"tofu-world-fact-{index}",
                subject="",
                question=question,
                answer=answer,
                role="general_retain",
                perturbed_answers=tuple(str(w).strip() for w in wrong if str(w).strip()),
            )
        )
    return records


#: Left out of a question's relation; where, when, who and how stay: they say what it asks.
_FUNCTION_WORDS = (
    frozenset(
        "what which whose in on at for from to with did does do was were is are has have had the a "
        "an of by his her their he she they one any name".split()
    )
    | _PARTICLES
)


def _relation(fact: Fact) -> frozenset[str]:
    """The words of a question that say what it asks: its lower-case words but function words
    (names, its person's and others', and quoted titles are whom and what it asks about)."""
    words = _QUOTED.sub(" ", fact.question).split()
    kept = (w for i, w in enumerate(words) if i == 0 or not w[:1].isupper())
    cleaned = (_possessive(w.strip("?.,;:()").casefold())[0] for w in kept)
    return frozenset(w for w in cleaned if w and w not in _FUNCTION_WORDS and not w.isdigit())


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def forget_persons(persons: Sequence[str], forget_set: str, n_holdout: int) -> list[str]:
    """The persons ``forget_<n>_<k>`` forgets: the k-th run of n in the file's order."""
    match = FORGET_SET.fullmatch(forget_set)
    available = len(persons) - n_holdout - 1  # one person at least is kept for the retain sets
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise DataError(
            f"data=wpu_real has no forget set {forget_set!r}; use forget_<n>_<k> (the k-th run "
            "of n persons in the file's order), e.g. forget_2_1..forget_2_5"
        )
    n, k = int(match[1]), int(match[2])
    if n * k > available:
        raise DataError(
            f"{forget_set} needs {n * k} persons before the holdout, the file has {available} "
            f"({len(persons)} persons, {n_holdout} held out, one kept); "
            f"use k ≤ {available // n} or lower data.n_holdout_persons"
        )
    return list(persons[n * (k - 1) : n * k])


def _answer_sharing(
    forget: Sequence[Fact], kept: Sequence[Fact], general: Sequence[QARecord], per_fact: int
) -> list[QARecord]:
    """Per forget question, up to ``per_fact`` kept questions and as many world facts whose true
    answer is its answer, or a part or alias of it; each question once."""
    sources = (
        [k.record("answer_sharing_retain") for k in kept],
        [replace(g, role="answer_sharing_retain") for g in general],
    )
    taken: set[str] = set()
    sharing: list[QARecord] = []
    for fact in forget:
        for source in sources:
            found = [
                r for r in source if r.id not in taken and shares_answer(fact.answer, r.answer)
            ][:per_fact]
            taken.update(r.id for r in found)
            sharing += found
    return sharing


def _hard_retain(
    forget: Sequence[Fact], kept: Sequence[Fact], per_fact: int, min_similarity: float
) -> list[QARecord]:
    """Per forget question, up to ``per_fact`` kept questions of the same relation (the most
    similar first, the file's order breaking ties), whose answer is another; each once."""
    taken: set[str] = set()
    hard: list[QARecord] = []
    for fact in forget:
        asked = _relation(fact)
        scored = [
            (_similarity(asked, _relation(k)), -index, k)
            for index, k in enumerate(kept)
            if k.id not in taken and not shares_answer(fact.answer, k.answer)
        ]
        for similarity, _, k in sorted(scored, key=lambda s: s[:2], reverse=True)[:per_fact]:
            if similarity >= min_similarity:
                taken.add(k.id)
                hard.append(k.record("hard_retain"))
    return hard


def _round_robin(facts: Sequence[Fact]) -> list[Fact]:
    """Every person's first question, then every person's second, ...: a few span many persons."""
    depth: Counter[str] = Counter()
    ranked = []
    for index, fact in enumerate(facts):
        ranked.append((depth[fact.person], index, fact))
        depth[fact.person] += 1
    return [fact for _, _, fact in sorted(ranked, key=lambda r: r[:2])]


@DATASETS.register("wpu_real")
def load_wpu_real(cfg: Any) -> UnlearningData:
    facts = read_facts(data_path(cfg.path, "the WPU questions file"))
    persons = list(dict.fromkeys(f.person for f in facts))
    forgotten = forget_persons(persons, cfg.forget_set, cfg.n_holdout_persons)
    held_out = set(persons[len(persons) - cfg.n_holdout_persons :])
    forget = [f for f in facts if f.person in forgotten]
    kept = [f for f in facts if f.person not in forgotten and f.person not in held_out]
    general = (
        world_facts(data_path(cfg.world_facts, "the world facts file")) if cfg.world_facts else []
    )
    sharing = _answer_sharing(forget, kept, general, cfg.answer_sharing_per_fact)
    taken = {r.id for r in sharing}
    hard = _hard_retain(
        forget,
        [k for k in kept if k.id not in taken],
        cfg.hard_retain_per_fact,
        cfg.hard_retain_min_similarity,
    )
    taken |= {r.id for r in hard}
    retain = _round_robin([k for k in kept if k.id not in taken])
    records = [
        *(f.record("forget") for f in forget),
        *sharing,
        *hard,
        *(k.record("retain") for k in retain[: cfg.n_retain]),
        *(f.record("holdout") for f in facts if f.person in held_out),
        *[g for g in general if g.id not in taken][: cfg.n_general_retain],
    ]
    log.info(
        "wpu_real %s: %d persons; forgets %s (%d questions); %d answer-sharing, %d hard-retain "
        "questions",
        cfg.forget_set, len(persons), " and ".join(forgotten), len(forget), len(sharing), len(hard),
    )  # fmt: skip
    return UnlearningData(
        name=f"wpu_real/{cfg.forget_set}",
        records=tuple(records),
        subjects_to_forget=tuple(forgotten),
    )
