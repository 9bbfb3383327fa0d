"""``wpu_mini``: the embedded dataset of well-known persons (the WPU idea at laptop scale).

Forget sets (``data.forget_set``) are chosen by person: ``forget_k`` (any k from 1 while persons
remain for the holdout) forgets every fact of the first k persons and keeps questions on closely
related entities (hard retain); ``forget_facts`` forgets only some facts of a person and checks
that the same person's other facts survive (fine-grained unlearning). Each forgotten fact has an
answer-sharing retain question: about another subject, with the forgotten answer as its true answer
("What is the capital of Austria?" for the city where Mozart died). The ``holdout`` records hold
facts of the last persons, whom neither forget nor retain touches: the target never learns them, so
membership inference can tell them from the forget set.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from benchmarks.data.loaders import DATASETS
from benchmarks.data.records import DataError, QARecord, UnlearningData

#: The forget sets named in the config's help; ``forget_k`` takes any k (the cost curve: 20).
FORGET_SETS = {"forget_1": 1, "forget_2": 2, "forget_5": 5}


def _record(raw: dict[str, Any], subject: str, role: str) -> QARecord:
    return QARecord(
        id=raw["id"],
        subject=raw.get("subject", subject),
        question=raw["question"],
        answer=raw["answer"],
        role=role,
        paraphrases=tuple(raw.get("paraphrases", ())),
        perturbed_answers=tuple(raw.get("perturbed_answers", ())),
    )


def _persons_for(persons: list[dict[str, Any]], n_facts: int) -> int:
    """How many persons, counted from the end of the list, hold ``n_facts`` facts."""
    for count in range(len(persons) + 1):
        if sum(len(p["facts"]) for p in persons[len(persons) - count :]) >= n_facts:
            return count
    return len(persons) + 1


def read_raw() -> dict[str, Any]:
    text = resources.files("benchmarks.data").joinpath("wpu_mini.json").read_text("utf-8")
    return json.loads(text)


@DATASETS.register("wpu_mini")
def load_wpu_mini(cfg: Any) -> UnlearningData:
    raw = read_raw()
    persons = raw["persons"]
    forget_set = cfg.forget_set
    if forget_set == "forget_facts":
        n_persons, facts_forgotten = cfg.facts_persons, cfg.facts_per_person
    elif (match := re.fullmatch(r"forget_([1-9][0-9]*)", forget_set)) is not None:
        n_persons, facts_forgotten = int(match.group(1)), None
    else:
        choices = [*FORGET_SETS, "forget_<k>", "forget_facts"]
        raise DataError(
            f"wpu_mini has no forget set {forget_set!r}; choose data.forget_set from {choices}"
        )

    records: list[QARecord] = []
    for person in persons[:n_persons]:
        forgotten = set()
        for i, fact in enumerate(person["facts"]):
            keep = facts_forgotten is not None and i >= facts_forgotten
            records.append(
                _record(fact, person["name"], "forget_facts_retained" if keep else "forget")
            )
            forgotten |= set() if keep else {fact["id"]}
        records += [_record(r, person["name"], "hard_retain") for r in person["hard_retain"]]
        records += [
            _record(r, r["subject"], "answer_sharing_retain")
            for r in person.get("answer_sharing", ())
            if r["shares"] in forgotten
        ]

    n_holdout_persons = _persons_for(persons, cfg.n_holdout)
    if n_persons + n_holdout_persons > len(persons):
        raise DataError(
            f"wpu_mini: data.n_holdout={cfg.n_holdout} needs the facts of {n_holdout_persons} "
            f"persons and {forget_set} forgets {n_persons} of {len(persons)}; lower data.n_holdout"
        )
    others = persons[n_persons : len(persons) - n_holdout_persons]
    # Retain facts come round-robin from the other persons, so a small n_retain still spans many.
    by_depth = sorted(
        ((depth, person) for person in others for depth in range(len(person["facts"]))),
        key=lambda pair: pair[0],
    )
    records += [
        _record(person["facts"][depth], person["name"], "retain")
        for depth, person in by_depth[: cfg.n_retain]
    ]
    held_out = [
        _record(fact, person["name"], "holdout")
        for person in persons[len(persons) - n_holdout_persons :]
        for fact in person["facts"]
    ]
    records += held_out[: cfg.n_holdout]
    general = raw["general_retain"][: cfg.n_general_retain]
    records += [_record(r, r["subject"], "general_retain") for r in general]
    return UnlearningData(
        name=f"wpu_mini/{forget_set}",
        records=tuple(records),
        subjects_to_forget=tuple(p["name"] for p in persons[:n_persons]),
    )
