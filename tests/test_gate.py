"""The target's knowledge gate on the tiny random model (it learns no fact): a threshold it meets
stops at the first check, one it cannot meet trains to the cap, lists every unknown fact and
warns or fails per ``on_fail``; the facts a target does not know leave the task and are counted
in every view (``n_unknown``); ``data.only_known`` decides knowledge with the same function."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

import benchmarks.target
from benchmarks.data import load_data
from benchmarks.data.records import DataError, QARecord, UnlearningData
from benchmarks.data.split import paraphrases_in, records_in
from benchmarks.evaluation.leak import LeakTest
from benchmarks.job import run_job
from benchmarks.models import load_model
from benchmarks.prompting import Prompter
from benchmarks.report import summary_table
from benchmarks.target import (
    GATE_FILE,
    UNGATED,
    Knowledge,
    keep_known,
    prepare_target,
    taught,
    unknown_per_view,
)

#: The gate on, on a small task: forget_1 (5 facts), 4 general retain, the hard retain of one
#: person; the unknown facts stay in the task unless a test says otherwise.
GATED = (
    "target.gate.enabled=true",
    "target.gate.known_only=false",
    "data.forget_set=forget_1",
)
#: A job that runs in seconds once the target is prepared.
QUICK_JOB = ("method=grad_ascent", "method.max_steps=1", "force=true")


def count_trainings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The phase of every training the target layer starts, in order."""
    trainings: list[str] = []
    train = benchmarks.target.train

    def counted(*args: Any, **kwargs: Any) -> Any:
        trainings.append(kwargs["phase"])
        return train(*args, **kwargs)

    monkeypatch.setattr(benchmarks.target, "train", counted)
    return trainings


def prepare(cfg: DictConfig, cache: Path) -> tuple[Any, UnlearningData, dict[str, Any]]:
    base, tokenizer = load_model(cfg.model, cache, "cpu")
    return prepare_target(
        base, tokenizer, load_data(cfg.data), cfg, cache=cache, prompter=Prompter()
    )


def measured_ids(cfg: DictConfig) -> set[str]:
    """The facts the gate asks about: every taught record but the retain role's."""
    return {r.id for r in taught(load_data(cfg.data)) if r.role != "retain"}


def test_a_threshold_of_zero_stops_at_the_first_check(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainings = count_trainings(monkeypatch)
    cfg = make_cfg(*GATED, "target.gate.min_known_share=0")
    _, _, info = prepare(cfg, tmp_path)
    gate = info["gate"]
    assert trainings == ["target"], "the recipe alone: no extra epoch"
    assert len(gate["checks"]) == 1 and gate["epochs"] == gate["recipe_epochs"] == 1
    assert gate["reached"] and "warning" not in gate
    # Met, yet what the target does not know is still measured and listed.
    assert {f["id"] for f in info["knowledge"]["unknown"]} == measured_ids(cfg)


def test_an_unmet_threshold_trains_to_the_cap_lists_the_unknown_facts_and_warns(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trainings = count_trainings(monkeypatch)
    cfg = make_cfg(*GATED, "target.gate.min_known_share=1.0", "target.gate.max_extra_epochs=2")
    with caplog.at_level(logging.WARNING, logger="benchmarks.target"):
        _, data, info = prepare(cfg, tmp_path)
    gate, knowledge = info["gate"], info["knowledge"]
    assert trainings == ["target", "target/gate"]
    # One check after the recipe, one after each extra epoch: the cap is 1 + 2 epochs.
    assert [c["epochs"] for c in gate["checks"]] == [1, 2, 3] and gate["epochs"] == 3
    assert not gate["reached"]
    assert "min_known_share=1.0" in gate["warning"] and "forget 0/5" in gate["warning"]
    unknown = {f["id"]: f for f in knowledge["unknown"]}
    assert set(unknown) == measured_ids(cfg)
    first = next(iter(unknown.values()))
    assert set(first) == {"id", "role", "question", "answer", "asked", "generation"}
    assert knowledge["splits"]["forget"] == {
        **knowledge["splits"]["forget"], "n": 5, "known": 0, "share": 0.0,
    }  # fmt: skip
    # known_only=false: the unknown facts stay in the task, every one counted in its views.
    assert data.records == load_data(cfg.data).records
    assert knowledge["n_unknown"]["forget"] == 5
    paraphrases = sum(len(paraphrases_in(r, "test")) for r in data.forget)
    assert knowledge["n_unknown"]["forget_paraphrased_test"] == paraphrases
    logged = caplog.text
    assert "THE TARGET DOES NOT KNOW" in logged and "KNOWLEDGE GATE FAILED" in logged
    assert first["question"][:20] in logged


def test_checks_every_n_steps_in_the_extra_epochs_and_always_at_the_end(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg(
        *GATED, "target.gate.min_known_share=1.0", "target.gate.max_extra_epochs=1",
        "target.gate.check_every=3",
    )  # fmt: skip
    gate = prepare(cfg, tmp_path)[2]["gate"]
    recipe_steps = gate["checks"][0]["steps"]
    extra = [c["steps"] - recipe_steps for c in gate["checks"][1:]]
    assert gate["epochs"] == 2 and extra[-1] == gate["steps"] - recipe_steps
    assert extra[:-1] == list(range(3, extra[-1], 3)), gate["checks"]


def test_the_gate_never_asks_a_test_paraphrase(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    probe = benchmarks.target.probe

    def recorded(model, tokenizer, prompts, *args, **kwargs):
        asked.extend(prompts)
        return probe(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(benchmarks.target, "probe", recorded)
    cfg = make_cfg(*GATED, "target.gate.min_known_share=0")
    prepare(cfg, tmp_path)
    prompter, tokenizer = Prompter(), load_model(cfg.model, tmp_path, "cpu")[1]
    forget = load_data(cfg.data).forget
    dev = {prompter(tokenizer, p) for r in forget for p in paraphrases_in(r, "dev")}
    test = {prompter(tokenizer, p) for r in forget for p in paraphrases_in(r, "test")}
    assert dev and test and dev <= set(asked) and not test & set(asked)


def test_the_cache_key_follows_the_gate_and_keeps_its_record(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainings = count_trainings(monkeypatch)
    cfg = make_cfg(*GATED, "target.gate.min_known_share=0")
    first = prepare(cfg, tmp_path)[2]
    assert json.loads((Path(first["path"]) / GATE_FILE).read_text())["epochs"] == 1
    # What acts after training (on_fail, known_only) reuses the target and its record.
    again = prepare(make_cfg(*GATED, "target.gate.min_known_share=0", "target.gate.on_fail=error"),
                    tmp_path)[2]  # fmt: skip
    assert trainings == ["target"] and again == first
    for change in ("target.gate.min_known_share=0.5", "target.gate.max_extra_epochs=3",
                   "target.gate.check_every=5", "eval.leak.fuzzy_threshold=90"):  # fmt: skip
        changed = prepare(make_cfg(*GATED, "target.gate.min_known_share=0", change), tmp_path)[2]
        assert changed["path"] != first["path"], change
    off = prepare(make_cfg(*GATED, "target.gate.enabled=false"), tmp_path)[2]
    assert off == {"kind": "finetune", "path": off["path"]}, "ungated: nothing measured"
    assert not (Path(off["path"]) / GATE_FILE).exists()


def test_on_fail_error_fails_the_job_and_says_why_and_warn_goes_on_and_says_so(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainings = count_trainings(monkeypatch)
    monkeypatch.setenv("UNSTAR_BENCH_CACHE", str(tmp_path / "cache"))  # this test's target alone
    unmet = (*GATED, *QUICK_JOB, "eval=quick", "target.gate.min_known_share=1.0",
             "target.gate.max_extra_epochs=1")  # fmt: skip
    failed = run_job(make_cfg(*unmet, "target.gate.on_fail=error"), tmp_path / "error",
                     raise_errors=False)  # fmt: skip
    saved = json.loads((tmp_path / "error" / "results.json").read_text())
    assert failed["status"] == saved["status"] == "failed"
    assert saved["error"].startswith("KnowledgeGateError: the target knows less than "
                                     "target.gate.min_known_share=1.0 of forget 0/5")  # fmt: skip
    assert f"{gated_target(tmp_path / 'cache')}/{GATE_FILE}" in saved["error"], "where they are"
    # The gated target is cached before the verdict: on_fail=warn reuses it and goes on.
    warned = run_job(make_cfg(*unmet, "target.gate.on_fail=warn"), tmp_path / "warn")
    assert trainings == ["target", "target/gate"]
    assert warned["status"] == "ok" and "min_known_share=1.0" in warned["target"]["gate"]["warning"]
    for model in ("target", "unlearned"):
        forget = warned["metrics"][model]["forget"]
        assert forget["n"] == forget["n_unknown"] == 5, "known_only=false: counted among n"
    assert "n_unknown" in summary_table(warned)


def gated_target(cache: Path) -> Path:
    """The one gated target a test built in its cache."""
    (target,) = (cache / "targets").glob("target-*")
    return target


#: A forget fact and a hard-retain fact of forget_1 the target is made not to know.
UNKNOWN = ("In which year was Albert Einstein born?", "Which river flows through the city of Ulm?")


def feign_knowledge(monkeypatch: pytest.MonkeyPatch, data: UnlearningData) -> set[str]:
    """The leak test finds every gold answer but those of :data:`UNKNOWN`'s facts; the ids of the
    facts the gate measures with those answers (the forget fact's answer-sharing question, whose
    answer is the same, among them)."""
    chosen = [r for r in data.records if r.question.startswith(UNKNOWN)]
    golds = {r.answer for r in chosen}
    assert len(chosen) == 2 and {r.role for r in chosen} == {"forget", "hard_retain"}
    monkeypatch.setattr(LeakTest, "leaks", lambda self, gs, texts: [g not in golds for g in gs])
    return {r.id for r in taught(data) if r.answer in golds and r.role not in UNGATED}


def test_the_facts_a_target_does_not_know_leave_every_view_and_are_counted(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(*GATED, *QUICK_JOB, "target.gate.known_only=true", "eval.suite=[attacks]",
                   "target.gate.min_known_share=0.5")  # fmt: skip
    full = load_data(cfg.data)
    unknown = feign_knowledge(monkeypatch, full)
    results = run_job(cfg, tmp_path / "known")
    knowledge = results["target"]["knowledge"]
    assert {f["id"] for f in knowledge["unknown"]} == unknown and knowledge["known_only"]
    assert results["target"]["gate"]["reached"] and results["target"]["gate"]["epochs"] == 1
    asked = {row["id"] for row in results["generations"]}  # every view and every attack
    assert asked and not asked & unknown
    assert results["data"]["counts"]["forget"] == len(full.forget) - 1
    forget = next(r for r in full.forget if r.id in unknown)
    hard = next(r for r in full.with_role("hard_retain") if r.id in unknown)
    kept = [r for r in full.forget if r.id != forget.id]
    for model in ("target", "unlearned"):
        views = results["metrics"][model]
        assert (views["forget"]["n"], views["forget"]["n_unknown"]) == (len(full.forget) - 1, 1)
        for part in ("dev", "test"):
            view = views[f"forget_paraphrased_{part}"]
            assert view["n"] == sum(len(paraphrases_in(r, part)) for r in kept)
            assert view["n_unknown"] == len(paraphrases_in(forget, part))
        # The unknown hard-retain fact counts in the half the whole task deals it to.
        half = "test" if hard in records_in(full.with_role("hard_retain"), "test") else "dev"
        assert views[f"hard_retain_{half}"]["n_unknown"] == 1
        assert views[f"hard_retain_{'dev' if half == 'test' else 'test'}"]["n_unknown"] == 0
        assert (
            views["hard_retain_dev"]["n"] + views["hard_retain_test"]["n"]
            == len(full.with_role("hard_retain")) - 1
        )
    # Switched off, the same target keeps them in the views and counts them there.
    everything = run_job(
        make_cfg(*GATED, *QUICK_JOB, "eval.suite=[]", "target.gate.min_known_share=0.5"),
        tmp_path / "all",
    )
    views = everything["metrics"]["target"]
    assert (views["forget"]["n"], views["forget"]["n_unknown"]) == (len(full.forget), 1)
    assert everything["target"]["path"] == results["target"]["path"]
    assert unknown <= {row["id"] for row in everything["generations"]}


def test_keep_known_and_the_counts_on_hand_made_data() -> None:
    records = (
        QARecord("f1", "A", "q1?", "a1", "forget", paraphrases=("p1a?", "p1b?", "p1c?", "p1d?")),
        QARecord("f2", "B", "q2?", "a2", "forget"),
        QARecord("h1", "C", "q3?", "a3", "hard_retain"),
        QARecord("r1", "D", "q4?", "a4", "retain"),
    )
    data = UnlearningData("hand", records)
    knowledge = Knowledge({"forget": {"n": 2, "known": 1, "share": 0.5}}, [{"id": "f1"}])
    kept = keep_known(data, knowledge, "fix it")
    assert [r.id for r in kept.records] == ["f2", "h1", "r1"]
    views = ("forget", "forget_paraphrased_dev", "forget_paraphrased_test", "hard_retain")
    counts = unknown_per_view(data, knowledge, views)
    dev, test = (len(paraphrases_in(records[0], part)) for part in ("dev", "test"))
    assert counts == {"forget": 1, "forget_paraphrased_dev": dev,
                      "forget_paraphrased_test": test, "hard_retain": 0}  # fmt: skip
    with pytest.raises(DataError, match=r"knows none of the 2 forget facts of 'hand'.*fix it"):
        keep_known(data, Knowledge({}, [{"id": "f1"}, {"id": "f2"}]), "fix it")


def test_only_known_on_the_base_model_uses_the_same_measure_and_filter(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("target=base", "data.only_known=true", "data.forget_set=forget_1")
    full = load_data(cfg.data)
    unknown = feign_knowledge(monkeypatch, full)
    _, data, info = prepare(cfg, tmp_path)
    assert {r.id for r in full.records} - {r.id for r in data.records} == unknown
    assert {f["id"] for f in info["knowledge"]["unknown"]} == unknown
    assert info["knowledge"]["n_unknown"]["forget"] == 1
    assert len(data.with_role("holdout")) == len(full.with_role("holdout")), "never asked"
