"""The dev/test split: deterministic, disjoint and complete per view; wpu_mini has dev and test
paraphrases of every forget question that are not near-copies of each other; no method ever
receives a test paraphrase. (That selection cannot read a test view: tests/test_selection.py.)"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from itertools import product
from pathlib import Path

import pytest
from omegaconf import DictConfig
from rouge_score import rouge_scorer

from benchmarks.data import load_data
from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.data.split import (
    PARTS,
    SPLIT_ROLES,
    SPLIT_VIEWS,
    for_methods,
    paraphrases_in,
    parse_view,
    part_of,
    records_in,
    reported,
)
from benchmarks.evaluation.evaluate import eval_items
from benchmarks.job import run_job
from benchmarks.methods import METHODS

#: A dev and a test paraphrase of the same question with a ROUGE-L F1 (stemmed word LCS) at or
#: above this are near-copies: asking one tells little the other did not.
NEAR_COPY = 0.6
#: Every forget set wpu_mini offers, at the settings that forget the most persons' facts.
FORGET_SETS = ("forget_1", "forget_2", "forget_5", "forget_facts")


def wpu_mini(make_cfg: Callable[..., DictConfig], forget_set: str) -> UnlearningData:
    return load_data(make_cfg(f"data.forget_set={forget_set}", "data.n_general_retain=null").data)


def test_the_split_is_a_pure_function_of_the_question() -> None:
    # Pinned: a change of salt or hash would silently reshuffle every dev/test half.
    assert [part_of("einstein-birthplace", q) for q in "abcdef"] == [
        "dev", "test", "dev", "dev", "test", "test",
    ]  # fmt: skip
    before = [part_of(f"id{i}", f"question {i}") for i in range(200)]
    random.seed(1)  # no RNG state is involved
    after = [part_of(f"id{i}", f"question {i}") for i in range(200)]
    assert before == after
    # Both halves get a fair share: 200 coin flips land within 100 ± 30 (p > 0.9999).
    assert 70 <= before.count("test") <= 130


@pytest.mark.parametrize("forget_set", FORGET_SETS)
def test_every_split_view_is_cut_into_disjoint_halves_that_cover_it(
    make_cfg: Callable[..., DictConfig], forget_set: str
) -> None:
    data = wpu_mini(make_cfg, forget_set)
    for base in SPLIT_VIEWS:
        whole = [(i.record.id, i.question) for i in eval_items(data, (base,))]
        dev, test = (
            [(i.record.id, i.question) for i in eval_items(data, (f"{base}_{part}",))]
            for part in PARTS
        )
        assert not set(dev) & set(test), base
        assert sorted(dev + test) == sorted(whole), base
        if whole:
            assert dev and test, f"{base} of {forget_set} has an empty half"
        if base != "forget_paraphrased":  # records are dealt alternately: halves within one
            assert 0 <= len(test) - len(dev) <= 1, base
        # Splitting again gives the same halves: the split is part of the data, not of the run.
        assert [(i.record.id, i.question) for i in eval_items(data, (f"{base}_dev",))] == dev
        assert reported(base, {f"{base}_dev", f"{base}_test"}) == f"{base}_test"
        assert parse_view(f"{base}_test") == (base, "test")
    assert parse_view("forget") == ("forget", None)


@pytest.mark.parametrize("forget_set", FORGET_SETS)
def test_wpu_mini_has_dev_and_test_paraphrases_that_are_not_near_copies(
    make_cfg: Callable[..., DictConfig], forget_set: str
) -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for record in wpu_mini(make_cfg, forget_set).forget:
        dev, test = (paraphrases_in(record, part) for part in PARTS)
        assert len(record.paraphrases) >= 4, record.id
        assert dev and test, f"{record.id}: dev {len(dev)}, test {len(test)}"
        closest = max((scorer.score(d, t)["rougeL"].fmeasure, d, t) for d, t in product(dev, test))
        assert closest[0] < NEAR_COPY, (record.id, closest)


def test_methods_see_the_dev_paraphrases_only() -> None:
    record = QARecord("r", "S", "Q?", "A", "forget", paraphrases=tuple(f"P{i}?" for i in range(12)))
    data = UnlearningData("d", (record,))
    (seen,) = for_methods(data).records
    assert seen.paraphrases == paraphrases_in(record, "dev") != record.paraphrases
    assert not set(seen.paraphrases) & set(paraphrases_in(record, "test"))


def test_a_method_never_receives_a_test_paraphrase(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on grad_ascent's ``unlearn``, run by the job on the tiny model."""
    method = METHODS.get("grad_ascent")
    received: list[UnlearningData] = []
    unlearn = method.unlearn

    def spy(self, model, tokenizer, data, ctx):
        received.append(data)
        return unlearn(self, model, tokenizer, data, ctx)

    monkeypatch.setattr(method, "unlearn", spy)
    cfg = make_cfg(
        "method=grad_ascent", "method.max_steps=1", "target.train.max_steps=1", "force=true",
        "eval.suite=[]", "data.forget_set=forget_5",
    )  # fmt: skip
    results = run_job(cfg, tmp_path / "job")
    assert results and len(received) == 1
    (seen,) = received
    full = load_data(cfg.data)
    tested = {(r.id, p) for r in full.forget for p in paraphrases_in(r, "test")}
    assert tested, "the data has test paraphrases: the check below is not vacuous"
    assert not {(r.id, p) for r in seen.records for p in r.paraphrases} & tested
    held_out = {r.id for role in SPLIT_ROLES for r in records_in(full.with_role(role), "test")}
    assert held_out, "the data has test-half records: the check below is not vacuous"
    assert not {r.id for r in seen.records} & held_out
    # The evaluation still asks them.
    rows = json.loads((tmp_path / "job" / "results.json").read_text("utf-8"))["generations"]
    asked = {
        (row["id"], row["question"]) for row in rows if row["view"] == "forget_paraphrased_test"
    }
    assert asked == tested
