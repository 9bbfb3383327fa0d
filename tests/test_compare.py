"""The comparison's intervals and ties: the bootstrap interval covers a known mean at about the
nominal rate; ties are found by paired differences; a sweep's comparison reads per-question rows
of its jobs, lists tuning and costs, and draws the Pareto plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.collect import main
from analysis.compare import compare, pareto_front
from analysis.intervals import bootstrap, draws, replicates, ties
from analysis.runs import read_sweep


def experiment(rng: np.random.Generator, n_questions: int = 40, n_seeds: int = 3) -> np.ndarray:
    """Binary outcomes (a leak or not) of questions of different difficulty, for three seeds:
    question q leaks with probability p_q ~ Beta(2, 5), so the population mean is 2/7."""
    p = rng.beta(2, 5, size=n_questions)
    return (rng.random((n_seeds, n_questions)) < p).astype(float)


def test_the_interval_covers_the_known_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for index in range(200):
        values = experiment(rng)
        found, _ = bootstrap(
            {"x": ("q", values)}, lambda m: m["x"], draws({"q": values.shape[1]}, 400, index)
        )
        covered += found.contains(2 / 7)
    assert 0.9 <= covered / 200 <= 0.99, covered / 200


def test_a_difference_inside_the_interval_is_a_tie() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(2, 5, size=40)
    same_a = (rng.random((3, 40)) < p).astype(float)
    same_b = (rng.random((3, 40)) < p).astype(float)
    better = np.zeros((3, 40))  # never leaks
    pool_draws = draws({"q": 40}, 1000, 0)
    reps = {
        name: replicates({"x": ("q", v)}, lambda m: m["x"], pool_draws)
        for name, v in {"a": same_a, "b": same_b, "never": better}.items()
    }
    points = {name: float(replicates({"x": ("q", v)}, lambda m: m["x"], None)[0])
              for name, v in {"a": same_a, "b": same_b, "never": better}.items()}  # fmt: skip
    assert ties(reps, points, higher_is_better=False) == ("never", [])
    del reps["never"], points["never"]
    best, tied = ties(reps, points, higher_is_better=False)
    assert tied == [{"a": "b", "b": "a"}[best]]


def test_the_pareto_front_keeps_what_nothing_beats_on_both_axes() -> None:
    points = {"a": (0.9, 0.2), "b": (0.5, 0.9), "c": (0.4, 0.8), "d": (0.9, 0.1)}
    assert pareto_front(points) == ["a", "b"]


def fake_job(
    sweep: Path,
    number: int,
    method: str,
    seed: int,
    leaks: list[float],
    tuned: bool,
    split: bool = False,
    answer: str | None = None,
    **config,
) -> None:
    """A finished job whose unlearned model leaks ``leaks`` on forget questions f0.. and keeps
    the target's retain answers half; ``split``: the paraphrase and retain views come in test
    halves holding those values and dev halves where the unlearned model leaks everything and
    keeps nothing (what a table must never report); ``answer``: what the unlearned model says to
    every forget-side question (no generations recorded without it)."""
    job = sweep / str(number)
    job.mkdir(parents=True)
    rows = []
    for model in ("target", "unlearned"):
        for q, leak in enumerate(leaks):
            value = 1.0 if model == "target" else leak
            rows.append({"model": model, "view": "forget", "id": f"f{q}", "leak_rate": value,
                         "rougeL_recall": value})  # fmt: skip
            for _ in range(2):  # two paraphrases: one unit
                rows.append({"model": model, "view": "forget_paraphrased" + "_test" * split,
                             "id": f"f{q}", "leak_rate": value, "rougeL_recall": value})  # fmt: skip
                if split:
                    rows.append({"model": model, "view": "forget_paraphrased_dev", "id": f"f{q}",
                                 "leak_rate": 1.0, "rougeL_recall": 1.0})  # fmt: skip
        for view in ("hard_retain", "general_retain"):
            for q in range(5):
                rouge = 0.8 if model == "target" else 0.4
                rows.append({"model": model, "view": view + "_test" * split, "id": f"{view}{q}",
                             "rougeL_recall": rouge, "leak_rate": 1.0})  # fmt: skip
                if split:
                    rows.append({"model": model, "view": f"{view}_dev", "id": f"{view}d{q}",
                                 "rougeL_recall": 0.8 if model == "target" else 0.0,
                                 "leak_rate": 1.0})  # fmt: skip
    tuning = (
        {"status": "tuned", "params": {"method.lr": 3e-5}, "objective": 0.6, "n_trials": 20}
        if tuned
        else {"status": "untuned", "why": "use_tuned=false"}
    )
    results = {
        "status": "ok", "method": method, "seed": seed,
        "config": {"method": {"name": method, "lr": 3e-5 if tuned else 1e-5}, "seed": seed,
                   **config},
        "generations": rows, "tuning": tuning,
        "method_metrics": {"stopping": {"rule": "stop_when_forgotten", "steps": 10 + seed,
                                        "stopped_early": seed == 0}},
        "costs": {"unlearn": {"optimizer_steps": 10, "train_tokens": 500, "generated_tokens": 0,
                              "forward_passes": 20}},
        "timings_s": {"unlearn": 2.0},
    }  # fmt: skip
    if answer is not None:
        for row in rows:
            if row["model"] == "unlearned" and row["view"].startswith("forget"):
                row["generation"] = answer
    (job / "results.json").write_text(json.dumps(results))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    for seed in range(3):
        fake_job(sweep, seed, "npo", seed, [0.0] * 20, tuned=True)
        fake_job(sweep, 3 + seed, "grad_ascent", seed, [1.0] * 10 + [0.0] * 10, tuned=False)
    return sweep


def test_the_comparison_reads_per_question_rows_and_lists_tuning_and_costs(sweep: Path) -> None:
    comparison = compare(read_sweep(sweep).jobs, n_boot=300)
    table, setup = comparison.table, comparison.setup
    assert table.loc["npo", "forget leak mean"] == 0.0
    assert table.loc["grad_ascent", "forget leak mean"] == pytest.approx(0.5)
    low, high = table.loc["grad_ascent", ["forget leak low", "forget leak high"]]
    assert 0.2 < low < 0.5 < high < 0.8  # 20 questions: the interval is wide
    assert table.loc["npo", "forget leak rank"] == "best"
    assert table.loc["grad_ascent", "forget leak rank"] == ""
    assert table.loc["npo", "retain utility mean"] == pytest.approx(0.5)  # 0.4 / 0.8
    assert table.loc["grad_ascent", "retain utility rank"] == "tied"  # identical retain rows
    assert table.loc["npo", "forget efficacy mean"] == 1.0
    assert setup.loc["npo", "tuning"] == "tuned" and setup.loc["npo", "params"] == "method.lr=3e-05"
    assert setup.loc["grad_ascent", "tuning"] == "untuned"
    assert setup.loc["npo", "steps"] == 11.0 and setup.loc["npo", "stopped early"] == pytest.approx(
        1 / 3
    )
    assert setup.loc["npo", "forward_passes"] == 20


def test_collect_writes_the_comparison_and_the_pareto_plot(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "95% bootstrap interval" in printed and "0.000 [0.000, 0.000] ★" in printed
    for name in ("comparison.csv", "comparison.md", "setup.csv", "pareto.png"):
        assert (sweep / "analysis" / name).exists(), name


def test_a_sweep_of_tuned_and_default_runs_compares_them_side_by_side(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    number = 0
    for use_tuned in (True, False):
        for seed in range(2):
            fake_job(sweep, number, "npo", seed, [0.0] * 20, tuned=use_tuned, use_tuned=use_tuned)
            # No tuned file for grad_ascent: the same default job twice, counted once.
            fake_job(sweep, number + 1, "grad_ascent", seed, [1.0] * 20, tuned=False,
                     use_tuned=use_tuned)  # fmt: skip
            number += 2
    comparison = compare(read_sweep(sweep).jobs, n_boot=100)
    assert list(comparison.table.index) == ["npo (tuned)", "grad_ascent (untuned)", "npo (untuned)"]
    assert comparison.setup["seeds"].tolist() == [2, 2, 2]


def test_the_comparison_reads_the_test_halves_only(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, "npo", 0, [0.0] * 20, tuned=True, split=True)
    comparison = compare(read_sweep(sweep).jobs, n_boot=100)
    table = comparison.table
    assert table.loc["npo", "paraphrased leak mean"] == 0.0  # dev: 1.0
    assert table.loc["npo", "retain utility mean"] == pytest.approx(0.5)  # dev: 0
    assert table.loc["npo", "hard-retain rougeL mean"] == pytest.approx(0.4)
    assert not any(view.endswith("_dev") for view in comparison.views)
    assert "Views read: forget, forget_paraphrased_test, general_retain_test" in (
        comparison.markdown()
    )


def test_fluency_exposes_forgetting_by_gibberish(tmp_path: Path) -> None:
    """A model that forgets by looping leaks nothing, like a clean one, and scores lowest on
    fluency (the objective's F, per forget question); jobs without answers have no fluency."""
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, "npo", 0, [0.0] * 10, tuned=True, answer="He was born in Lyon in 1901.")
    fake_job(sweep, 1, "grad_ascent", 0, [0.0] * 10, tuned=True, answer="the the the the the the")
    table = compare(read_sweep(sweep).jobs, n_boot=100).table
    assert (
        table.loc["npo", "forget efficacy mean"] == table.loc["grad_ascent", "forget efficacy mean"]
    )
    assert table.loc["npo", "fluency mean"] == 1.0
    assert table.loc["grad_ascent", "fluency mean"] == pytest.approx(1 / 3)
    assert (
        table.loc["npo", "fluency rank"] == "best"
        and table.loc["grad_ascent", "fluency rank"] == ""
    )
    plain = tmp_path / "plain"
    fake_job(plain, 0, "npo", 0, [0.0] * 10, tuned=True)
    assert "fluency mean" not in compare(read_sweep(plain).jobs, n_boot=100).table
