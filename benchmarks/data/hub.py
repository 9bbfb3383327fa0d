"""``wpu`` and ``tofu``: the published benchmarks, read with the ``datasets`` library.

``data.repo`` is the hub id, or a directory holding a copy of the hub repository (made with
``hf download --repo-type dataset ID --local-dir DIR``): the per-config data files plus the
README whose ``configs`` table names them, so the same code reads both. Nothing is downloaded
unless ``data.repo`` is a hub id; offline, that fails with a DataError saying what to do.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from benchmarks.data.loaders import DATASETS
from benchmarks.data.records import DataError, QARecord, UnlearningData

WPU_ID = "Shiyu-Lab/Wikipedia_Person_Unlearn"
WPU_FORGET_SETS = (
    *(f"forget_2_{i}" for i in range(1, 6)),
    *(f"forget_20_{i}" for i in range(1, 4)),
    "forget_100",
)
TOFU_ID = "locuslab/TOFU"
#: Each TOFU forget set and the retain config holding every other author.
TOFU_FORGET_SETS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HUB_IDS = {"wpu": WPU_ID, "tofu": TOFU_ID}


def _source(repo: str) -> str:
    """What ``datasets`` should open: an existing directory, else the hub id as given."""
    path = Path(repo).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or repo.startswith((".", "/", "~")):
        raise DataError(
            f"data.repo={repo!r} is not a directory; point it at a local copy of the "
            "dataset repository, or at its hub id"
        )
    return repo


def _load_rows(repo: str, config: str, hub_id: str) -> list[dict[str, Any]]:
    """The rows of one config's train split; any failure says how to get the data offline."""
    import datasets  # imported here: it takes seconds, and only the hub loaders need it

    source = _source(repo)
    try:
        return datasets.load_dataset(source, name=config, split="train").to_list()
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise DataError(
            f"cannot load config {config!r} of {source!r}: {err}\n"
            f"Without network: on a connected machine run `hf download --repo-type dataset "
            f"{hub_id} --local-dir DIR`, copy DIR here and set data.repo=DIR; "
            "or use the embedded dataset with data=wpu_mini."
        ) from err


def _strings(value: Any) -> tuple[str, ...]:
    """A column holding one string or a list of them, as non-empty stripped strings."""
    values = [value] if isinstance(value, str) else (value or [])
    return tuple(s.strip() for s in values if isinstance(s, str) and s.strip())


def _text(row: dict[str, Any], column: str, where: str) -> str:
    text = str(row.get(column) or "").strip()
    if not text:
        raise DataError(f"{where}: empty or missing {column!r}; columns are {sorted(row)}")
    return text


def _records(
    rows: Sequence[dict[str, Any]],
    dataset: str,
    config: str,
    role: str,
    subjects: Sequence[str] | None = None,
) -> list[QARecord]:
    """Canonical records; WPU names the person in ``title``, TOFU's subjects are derived
    (``subjects``, one per row: :func:`tofu_authors`)."""
    return [
        QARecord(
            id=f"{dataset}-{role}-{index}",
            subject=subjects[index] if subjects else str(row.get("title") or "").strip(),
            question=_text(row, "question", f"{dataset} {config}, row {index}"),
            answer=_text(row, "answer", f"{dataset} {config}, row {index}"),
            role=role,
            paraphrases=_strings(row.get("paraphrased_question")),
            perturbed_answers=_strings(row.get("perturbed_answer")),
            paraphrased_answer=next(iter(_strings(row.get("paraphrased_answer"))), None),
        )
        for index, row in enumerate(rows)
    ]


def _rows(cfg: Any, dataset: str, config: str) -> list[dict[str, Any]]:
    hub_id = HUB_IDS[dataset]
    return _load_rows(cfg.get("repo") or hub_id, config, hub_id)


def _part(cfg: Any, dataset: str, config: str, role: str) -> list[QARecord]:
    """One config of the dataset as records of one role."""
    return _records(_rows(cfg, dataset, config), dataset, config, role)


# -- TOFU's authors ----------------------------------------------------------------------------

#: TOFU lists 20 questions per fictitious author, author after author, in its forget and retain
#: configs (forget01 is the last 2 authors, forget10 the last 20); the rows carry no author.
TOFU_QUESTIONS_PER_AUTHOR = 20
#: A word of a name: letters, inner hyphens or apostrophes (Al-Kuwaiti, Yun-Hwa, O'Neill).
_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
#: Titles in double quotes ("The Immutable Laws of Leadership") are not names.
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")
_POSSESSIVE = re.compile(r"['’]s$")


def _name_spans(text: str) -> set[str]:
    """Every run of two or more capitalised words joined by single spaces, and every shorter run
    of two or more inside it (a comma, a quoted title or a possessive 's ends a run)."""
    text = _QUOTED.sub(" | ", text)
    runs: list[list[str]] = [[]]
    end = 0
    for match in _WORD.finditer(text):
        word = match.group()
        possessive = bool(_POSSESSIVE.search(word))
        word = _POSSESSIVE.sub("", word)
        if not word[0].isupper() or text[end : match.start()] != " ":
            runs.append([])
        if word[0].isupper():
            runs[-1].append(word)
        if possessive:
            runs.append([])
        end = match.end()
    return {
        " ".join(run[i:j])
        for run in runs
        for i in range(len(run))
        for j in range(i + 2, len(run) + 1)
    }


def tofu_authors(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The author each TOFU question is about, derived from the questions and answers.

    A name is a span of capitalised words (:func:`_name_spans`), counted once per row naming it.
    An author's name recurs in most of their 20 rows, a birthplace or an award in a few, so in
    each block of :data:`TOFU_QUESTIONS_PER_AUTHOR` rows the most counted span (then the longest:
    "Basil Mahfouz Al-Kuwaiti" over "Basil Mahfouz") is the block's author, and any span counted
    at least half as often is a name too (a block that straddles two authors). A row is about the
    name it mentions (the most counted over all rows if it mentions two), else about its block's
    author: so the first question ("What is the full name of the author born in ...?", whose
    answer names the author) and a question naming nobody get the block's author. A block naming
    nobody twice gets "", which the methods that name or rename the subject refuse.
    """
    spans = [_name_spans(f"{row.get('question') or ''}\n{row.get('answer') or ''}") for row in rows]
    total = Counter(span for row_spans in spans for span in row_spans)
    block_authors: list[str] = []
    names: set[str] = set()
    for start in range(0, len(rows), TOFU_QUESTIONS_PER_AUTHOR):
        block = spans[start : start + TOFU_QUESTIONS_PER_AUTHOR]
        counts = Counter(span for row_spans in block for span in row_spans)
        ranked = sorted(counts, key=lambda span: (counts[span], len(span.split())), reverse=True)
        top = counts[ranked[0]] if ranked else 0
        names |= {span for span in ranked if counts[span] >= 2 and 2 * counts[span] >= top}
        block_authors.append(ranked[0] if top >= 2 else "")
    return [
        max(
            row_spans & names,
            key=lambda span: (total[span], len(span.split())),
            default=block_authors[index // TOFU_QUESTIONS_PER_AUTHOR],
        )
        for index, row_spans in enumerate(spans)
    ]


def _authored(cfg: Any, config: str, role: str) -> list[QARecord]:
    """A TOFU config of fictitious authors' questions, each record naming its author."""
    rows = _rows(cfg, "tofu", config)
    return _records(rows, "tofu", config, role, tofu_authors(rows))


def _check_forget_set(forget_set: str, choices: Collection[str], dataset: str) -> None:
    if forget_set not in choices:
        raise DataError(
            f"{dataset} has no forget set {forget_set!r}; "
            f"choose data.forget_set from {list(choices)}"
        )


def _holdout_persons(rows: Sequence[dict[str, Any]], n_facts: int) -> set[str]:
    """The last persons of ``rows`` (by ``title``) that together hold ``n_facts`` facts."""
    persons = list(dict.fromkeys(str(row.get("title") or "").strip() for row in rows))
    chosen: set[str] = set()
    held = 0
    for person in reversed([p for p in persons if p]):
        if held >= n_facts:
            break
        chosen.add(person)
        held += sum(str(row.get("title") or "").strip() == person for row in rows)
    return chosen


@DATASETS.register("wpu")
def load_wpu(cfg: Any) -> UnlearningData:
    """Forget every fact of a set of Wikipedia persons; hard retain asks about related entities.

    The holdout (membership inference's non-members) is the facts of the last persons of the
    retain config: neither forgotten nor used to train retain terms, and never taught to the
    target (``target=finetune``). With ``target=base`` the model may know these real persons
    anyway, which MIA then reads as membership."""
    _check_forget_set(cfg.forget_set, WPU_FORGET_SETS, "wpu")
    forget = _part(cfg, "wpu", cfg.forget_set, "forget")
    hard = _part(cfg, "wpu", f"{cfg.forget_set}_hard_retain", "hard_retain")
    forgotten = {r.subject for r in forget if r.subject}
    # The retain term must never train on a forgotten person's facts.
    others = [
        row
        for row in _rows(cfg, "wpu", "retain")
        if str(row.get("title") or "").strip() not in forgotten
    ]
    held = _holdout_persons(others, cfg.n_holdout)
    retain = [row for row in others if str(row.get("title") or "").strip() not in held]
    if held and not retain:
        raise DataError(
            f"wpu: data.n_holdout={cfg.n_holdout} takes every person of the retain config that "
            f"{cfg.forget_set} does not forget; lower data.n_holdout"
        )
    holdout = [row for row in others if str(row.get("title") or "").strip() in held]
    general = _part(cfg, "wpu", "general_retain", "general_retain")
    return UnlearningData(
        name=f"wpu/{cfg.forget_set}",
        records=(
            *forget,
            *hard,
            *_records(retain, "wpu", "retain", "retain")[: cfg.n_retain],
            *_records(holdout, "wpu", "retain", "holdout")[: cfg.n_holdout],
            *general[: cfg.n_general_retain],
        ),
        subjects_to_forget=tuple(sorted(forgotten)),
    )


@DATASETS.register("tofu")
def load_tofu(cfg: Any) -> UnlearningData:
    """Forget fictitious authors. The evaluated sets are TOFU's: its retain evaluation set
    (``retain_perturbed``, other fictitious authors: the hard retain), real authors and world
    facts (their own roles: TOFU's model utility scores each). Subjects are derived per question
    (:func:`tofu_authors`); real authors and world facts have none."""
    _check_forget_set(cfg.forget_set, TOFU_FORGET_SETS, "tofu")
    # The _perturbed configs hold the same questions plus paraphrased and wrong answers.
    forget = _authored(cfg, f"{cfg.forget_set}_perturbed", "forget")
    retain = _authored(cfg, TOFU_FORGET_SETS[cfg.forget_set], "retain")
    kept = _authored(cfg, "retain_perturbed", "hard_retain")
    real = _part(cfg, "tofu", "real_authors_perturbed", "real_authors")
    world = _part(cfg, "tofu", "world_facts_perturbed", "world_facts")
    n = cfg.n_general_retain
    return UnlearningData(
        name=f"tofu/{cfg.forget_set}",
        records=(*forget, *kept[:n], *retain[: cfg.n_retain], *real[:n], *world[:n]),
        subjects_to_forget=tuple(dict.fromkeys(r.subject for r in forget if r.subject)),
    )
