"""Selection reads only SELECTION_VIEWS; the one early-stopping rule stops when nothing leaks and
at the cap otherwise; the tuning objective is the documented harmonic mean; costs are counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from test_baselines import DATA

from benchmarks.costs import COSTS, Costs, counting_forwards
from benchmarks.evaluation import selection
from benchmarks.evaluation.generation import generate
from benchmarks.evaluation.leak import LeakTest
from benchmarks.evaluation.selection import SelectionError, fluency, objective, selected
from benchmarks.methods import METHODS, JobContext
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter


@pytest.fixture
def tiny(make_cfg: Callable[..., DictConfig]) -> tuple:
    return load_model(make_cfg().model, cache_dir(), "cpu")


def unlearn(make_cfg, tiny, tmp_path: Path, *overrides: str) -> dict:
    """grad_ascent on the hand-made data; its method metrics."""
    cfg = make_cfg("method=grad_ascent", "method.batch_size=1", *overrides)
    model, tokenizer = tiny
    ctx = JobContext(seed=0, output_dir=tmp_path, cache_dir=tmp_path, eval_cfg=cfg.eval)
    return METHODS.get("grad_ascent")(cfg.method).unlearn(model, tokenizer, DATA, ctx).metrics


def test_the_rule_stops_at_the_first_check_when_nothing_leaks(make_cfg, tiny, tmp_path) -> None:
    # The tiny random model answers gibberish: the evaluation's own leak test finds no answer.
    stopping = unlearn(
        make_cfg, tiny, tmp_path,
        "method.stop_when_forgotten=true", "method.stop_check_every=2", "method.max_steps=10",
    )["stopping"]  # fmt: skip
    assert stopping["rule"] == "stop_when_forgotten"
    assert (stopping["steps"], stopping["cap"], stopping["checks"]) == (2, 10, 1)
    assert stopping["stopped_early"] and stopping["leaking_at_last_check"] == 0
    # The forget questions and their paraphrases (DATA has none) are probed.
    assert stopping["probed"] == len(DATA.forget)


def test_the_rule_runs_to_the_cap_while_something_leaks(
    make_cfg, tiny, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LeakTest, "leaks", lambda self, golds, texts: [True] * len(golds))
    stopping = unlearn(
        make_cfg, tiny, tmp_path,
        "method.stop_when_forgotten=true", "method.stop_check_every=2", "method.max_steps=6",
    )["stopping"]  # fmt: skip
    assert (stopping["steps"], stopping["cap"], stopping["checks"]) == (6, 6, 3)
    assert not stopping["stopped_early"] and stopping["leaking_at_last_check"] == len(DATA.forget)


def test_off_the_rule_only_records_the_steps(make_cfg, tiny, tmp_path) -> None:
    stopping = unlearn(make_cfg, tiny, tmp_path, "method.max_steps=3")["stopping"]
    assert stopping["rule"] == "off"
    assert (stopping["steps"], stopping["cap"], stopping["checks"]) == (3, 3, 0)
    assert not stopping["stopped_early"]


def test_the_rule_needs_the_evaluations_leak_test(make_cfg, tiny, tmp_path) -> None:
    cfg = make_cfg("method=grad_ascent", "method.stop_when_forgotten=true")
    ctx = JobContext(seed=0, output_dir=tmp_path, cache_dir=tmp_path)  # no eval config
    with pytest.raises(ValueError, match=r"JobContext\.eval_cfg"):
        METHODS.get("grad_ascent")(cfg.method).unlearn(*tiny, DATA, ctx)


def test_selection_refuses_a_view_outside_selection_views() -> None:
    # SELECTION_VIEWS is the forget set and the dev halves: no test half, no whole split view.
    assert set(selection.SELECTION_VIEWS) == {
        "forget", "forget_paraphrased_dev", "hard_retain_dev", "answer_sharing_retain_dev",
        "general_retain_dev", "forget_facts_retained_dev",
    }  # fmt: skip
    assert selected("forget_paraphrased") == "forget_paraphrased_dev"
    assert selection.probe_views() == ("forget", "forget_paraphrased_dev")
    for view in ("forget_paraphrased_test", "hard_retain_test", "general_retain_test",
                 "answer_sharing_retain_test", "forget_facts_retained_test", "real_authors"):  # fmt: skip
        with pytest.raises(SelectionError, match=f"may not read view '{view}'"):
            selected(view)
    with pytest.raises(SelectionError):  # the objective reads through the same door
        objective({}, {"forget_paraphrased_test": {"leak_rate": 0.0}}, [])


def test_the_objective_is_the_harmonic_mean_of_efficacy_utility_and_fluency() -> None:
    target = {
        "hard_retain_dev": {"rougeL_recall": 0.8},
        "general_retain_dev": {"rougeL_recall": 0.5},
    }
    unlearned = {
        "forget": {"leak_rate": 0.5},
        "forget_paraphrased_dev": {"leak_rate": 0.3},
        "hard_retain_dev": {"rougeL_recall": 0.4},
        "general_retain_dev": {"rougeL_recall": 0.6},  # above the target: capped at 1
        "forget_paraphrased_test": {"leak_rate": 1.0},  # a test half: not part of it
    }
    rows = [
        {"view": "forget", "generation": "I do not know who that is"},  # fluent: 1
        {"view": "forget_paraphrased_dev", "generation": ""},  # nothing: 0
        {
            "view": "forget_paraphrased_dev",
            "generation": "a b c d a b c d",
        },  # 5 4-grams, 4 distinct
        {"view": "hard_retain_dev", "generation": ""},  # retain answers are judged by ROUGE-L
    ]
    result = objective(target, unlearned, rows)
    efficacy, utility, fluent = 1 - (0.5 + 0.3) / 2, (0.5 + 1.0) / 2, (1 + 0 + 0.8) / 3
    assert result["forget_efficacy"] == pytest.approx(efficacy)
    assert result["retain_utility"] == pytest.approx(utility)
    assert result["fluency"] == pytest.approx(fluent)
    assert result["objective"] == pytest.approx(3 / (1 / efficacy + 1 / utility + 1 / fluent))
    assert fluency("the the the the the") == pytest.approx(0.5)


def test_the_objective_reads_answer_sharing_retain_where_it_was_evaluated() -> None:
    target = {v: {"rougeL_recall": 1.0} for v in ("hard_retain_dev", "general_retain_dev")}
    unlearned = {
        "forget": {"leak_rate": 0.0},
        "forget_paraphrased_dev": {"leak_rate": 0.0},
        "hard_retain_dev": {"rougeL_recall": 1.0},
        "general_retain_dev": {"rougeL_recall": 1.0},
    }
    rows = [{"view": "forget", "generation": "I do not know who that is"}]
    without = objective(target, unlearned, rows)
    assert without["retain_utility"] == 1.0
    assert "answer_sharing_retain_dev" not in without["views"]
    # A method that suppressed the forget answers everywhere loses on the answer-sharing view.
    target["answer_sharing_retain_dev"] = {"rougeL_recall": 0.8}
    unlearned["answer_sharing_retain_dev"] = {"rougeL_recall": 0.2}
    shared = objective(target, unlearned, rows)
    assert shared["retain_utility"] == pytest.approx((1 + 1 + 0.25) / 3)
    assert shared["views"][-1] == "answer_sharing_retain_dev"
    assert shared["objective"] < without["objective"]


def test_the_objective_names_missing_views() -> None:
    with pytest.raises(
        SelectionError,
        match=r"\['forget_paraphrased_dev', 'general_retain_dev', 'hard_retain_dev'\]",
    ):
        objective({}, {"forget": {"leak_rate": 0.0}}, [])


def test_costs_count_generation_scoring_and_training(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    prompts = [Prompter()(tokenizer, r.question) for r in DATA.forget]
    COSTS.clear()
    with COSTS.phase("gen"):
        generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=2)
    counted = COSTS.as_dict()["gen"]
    # Two batches of at most 5 decoding steps each, one forward call per step.
    assert 2 <= counted["forward_passes"] <= 10
    assert 0 < counted["generated_tokens"] <= 3 * 5
    with COSTS.phase("unlearn"):
        unlearn(make_cfg, tiny, tmp_path, "method.max_steps=3", "method.alpha=0")
    spent = COSTS.as_dict()["unlearn"]
    # grad_ascent: one forward per step on one forget pair (batch_size=1), no reference model.
    assert (spent["optimizer_steps"], spent["forward_passes"]) == (3, 3)
    assert spent["train_tokens"] > 3 * 5
    assert COSTS.as_dict()["total"]["forward_passes"] == 3 + counted["forward_passes"]


def test_nested_counting_counts_each_forward_once(tiny) -> None:
    model, tokenizer = tiny
    costs_before = COSTS.as_dict().get("outside_job", {}).get("forward_passes", 0)
    ids = tokenizer("hello", return_tensors="pt")
    with counting_forwards(model), counting_forwards(model):
        model(**ids)
    assert COSTS.as_dict()["outside_job"]["forward_passes"] == costs_before + 1
    with pytest.raises(KeyError, match="unknown cost counts"):
        Costs().add(tokens=1)
