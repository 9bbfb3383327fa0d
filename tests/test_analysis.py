"""analysis on synthetic sweeps with known numbers: the tables must give exactly the means, stds
and values relative to the best a reader would compute by hand, and never drop a failed or missing
job, nor count a re-run job twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
import wandb
from nbclient import NotebookClient
from omegaconf import OmegaConf

from analysis import runs
from analysis.collect import main
from analysis.runs import WandbRun, job_criteria, one_run_per_job, read_sweep, read_wandb
from analysis.tables import relative_to_best, robustness_columns, shown, summarise
from benchmarks.evaluation.criteria import CRITERIA
from benchmarks.evaluation.specs import MetricSpec, registered_metric
from benchmarks.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
#: Per method, per seed 0..2: the five criteria (UE, MU, RQ, HA, AR) of the unlearned model.
KNOWN = {
    "grad_ascent": [
        (0.8, 0.2, 0.5, 0.6, 0.3),
        (0.9, 0.3, 0.5, 0.6, 0.4),
        (1.0, 0.4, 0.5, 0.6, 0.5),
    ],
    "unstar": [
        (0.5, 0.6, 1.0, 0.9, 0.6),
        (0.6, 0.6, 0.9, 0.9, 0.7),
        (0.7, 0.6, 0.8, 0.9, 0.8),
    ],
}


def write_job(
    sweep: Path, num: int, overrides: dict[str, Any], results: dict[str, Any] | None
) -> Path:
    """A job directory as run.py leaves it: ``.hydra`` record, and ``results.json`` unless killed."""
    job_dir = sweep / str(num)
    node = OmegaConf.create(
        {
            "seed": overrides["seed"],
            "method": {"name": overrides["method"], "lr": 1e-5},
            "data": {"name": "wpu_mini", "forget_set": "forget_2"},
            "tracking": {"wandb": {"enabled": False, "project": "unstar-bench"}},
        }
    )
    for key, value in overrides.items():
        if key not in ("method", "seed"):  # the group choice and the seed are set above
            OmegaConf.update(node, key, value)
    config = OmegaConf.to_container(node)
    (job_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(config, job_dir / ".hydra" / "config.yaml")
    OmegaConf.save(
        [f"{k}={v}" for k, v in overrides.items()], job_dir / ".hydra" / "overrides.yaml"
    )
    if results is not None:
        record = {"method": overrides["method"], "seed": overrides["seed"], "config": config}
        (job_dir / "results.json").write_text(json.dumps({**record, **results}))
    return job_dir


def write_multirun(sweep: Path, task: list[str]) -> None:
    sweeper = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    hydra = {"sweeper": {"_target_": sweeper}, "overrides": {"task": task}, "sweep": {"dir": "x"}}
    OmegaConf.save({"hydra": hydra}, sweep / "multirun.yaml")


def ok_results(values: tuple[float, ...], seed: int) -> dict[str, Any]:
    leak = 0.1 * seed
    return {
        "status": "ok",
        "criteria": dict(zip(CRITERIA, values, strict=True)),
        "metrics": {
            "target": {"forget": {"leak_rate": 1.0, "rougeL_recall": 1.0}},
            "unlearned": {"forget": {"leak_rate": leak, "rougeL_recall": 0.5}},
        },
        "robustness": {
            "target": {"worst_case_leak": 1.0, "worst_case_attack": "greedy"},
            "unlearned": {"worst_case_leak": leak + 0.2, "worst_case_attack": "quantization"},
        },
        "timings_s": {"unlearn": 10.0 + seed, "eval_unlearned": 5.0},
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 methods × seeds 0..3: seeds 0..2 finished; grad_ascent's seed 3 failed, unstar's killed."""
    root = tmp_path / "sweep"
    root.mkdir()
    write_multirun(root, ["method=grad_ascent,unstar", "seed=0,1,2,3"])
    num = 0
    for method, rows in KNOWN.items():
        for seed, values in enumerate(rows):
            write_job(root, num, {"method": method, "seed": seed}, ok_results(values, seed))
            num += 1
        last = {"status": "failed", "error": "RuntimeError: boom"} if num < 4 else None
        write_job(root, num, {"method": method, "seed": 3}, last)
        num += 1
    return root


def test_means_stds_and_values_relative_to_the_best_are_the_known_ones(sweep: Path) -> None:
    summary = summarise(read_sweep(sweep).jobs)

    assert list(summary.index) == ["grad_ascent", "unstar"]
    assert list(summary["n"]) == [3, 3]
    assert summary.loc["grad_ascent", "criteria/unlearning_efficacy mean"] == pytest.approx(0.9)
    assert summary.loc["grad_ascent", "criteria/unlearning_efficacy std"] == pytest.approx(0.1)
    assert summary.loc["unstar", "criteria/model_utility std"] == pytest.approx(0.0)
    assert summary.loc["unstar", "criteria/response_quality mean"] == pytest.approx(0.9)
    assert summary.loc["grad_ascent", "unlearned/forget/leak_rate mean"] == pytest.approx(0.1)
    assert summary.loc["grad_ascent", "unlearned/forget/leak_rate std"] == pytest.approx(0.1)
    assert summary.loc["unstar", "time/unlearn mean"] == pytest.approx(11.0)
    worst = summary.loc["grad_ascent", "robustness/unlearned/worst_case_leak mean"]
    assert worst == pytest.approx(0.3)

    relative = relative_to_best(summary)
    expected = {
        "grad_ascent": [100, 50, 0.5 / 0.9 * 100, 0.6 / 0.9 * 100, 0.4 / 0.7 * 100],
        "unstar": [0.6 / 0.9 * 100, 100, 100, 100, 100],
    }
    for method, values in expected.items():
        got = [relative.loc[method, f"{name} mean"] for name in CRITERIA]
        assert got == pytest.approx(values)
    assert relative.loc["grad_ascent", "unlearning_efficacy std"] == pytest.approx(100 / 9)


def test_cli_reports_failed_and_missing_jobs_and_writes_tables_and_plots(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    out = sweep / "analysis"

    assert "8 jobs" in printed and "6 ok, 1 failed, 1 missing" in printed
    assert "RuntimeError: boom" in printed and "no results.json" in printed
    problems = (out / "problems.csv").read_text()
    assert "method=unstar,seed=3" in problems and "method=grad_ascent,seed=3" in problems
    summary = (out / "summary.md").read_text()
    assert "0.900 ± 0.100" in summary and "worst-case leak" in summary
    assert "100.0 ± 11.1" in (out / "relative_to_best.md").read_text()
    assert "\\toprule" in (out / "summary.tex").read_text()
    jobs = (out / "jobs.csv").read_text().splitlines()
    assert len(jobs) == 1 + 8 and "unlearned/forget/leak_rate" in jobs[0]
    for plot in ("criteria_bars", "criteria_radar", "efficacy_vs_utility"):
        png = out / f"{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def attacked_results(method: str, worst: float) -> dict[str, Any]:
    """One seed's results with the robustness battery: attacks, the worst case, the probes."""
    leak = {"leak_rate": 0.3, "attacked_leak_rate": 0.3, "greedy_leak_rate": 0.1, "n": 10}
    return {
        **ok_results(KNOWN[method][0], 0),
        "attacks": {
            "unlearned": {
                "paraphrase": {**leak, "leak_rate": 0.2},
                "quantization": {**leak, "8bit": {**leak, "leak_rate": 0.1},
                                 "4bit": {**leak, "leak_rate": worst}},
                "relearn_related": {**leak, "hard_retain": leak},
            },
            "target": {"paraphrase": {**leak, "leak_rate": 1.0}},
        },
        "robustness": {
            "unlearned": {"greedy_leak_rate": 0.1, "worst_case_leak": worst,
                          "worst_case_attack": "quantization"},
        },
        "multiple_choice": {"unlearned": {"forget": {"accuracy": 0.9, "chance": 0.25}}},
        "echo": {"unlearned": {"forget_paraphrased_test": {"echo_rate": 0.4,
                                                           "echo_share_of_fabrications": 0.5}}},
        "outcomes": {"unlearned": {"forget": {"leak": 0.1, "refusal": 0.3, "fabrication": 0.6}}},
    }  # fmt: skip


def test_the_robustness_table_and_the_worst_case_as_a_criterion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sweep"
    root.mkdir()
    write_multirun(root, ["method=grad_ascent,unstar", "seed=0"])
    for num, (method, worst) in enumerate([("grad_ascent", 0.5), ("unstar", 0.8)]):
        write_job(root, num, {"method": method, "seed": 0}, attacked_results(method, worst))
    summary = summarise(read_sweep(root).jobs)

    headers = list(robustness_columns(summary).values())
    assert headers == [
        "greedy", "paraphrase", "quantization/8bit", "quantization/4bit",
        "relearn_related/hard_retain", "worst case", "MC accuracy", "MC chance",
        "echo rate (test)", "echo / fabrications (test)", "refusal share", "fabrication share",
    ]  # fmt: skip
    relative = relative_to_best(summary)  # WR = 1 − worst-case leak, relative to the best
    assert relative.loc["grad_ascent", "worst_case_robustness mean"] == pytest.approx(100)
    assert relative.loc["unstar", "worst_case_robustness mean"] == pytest.approx(0.2 / 0.5 * 100)

    assert main([str(root)]) == 0
    assert "Forget leak under each attack" in capsys.readouterr().out
    table = (root / "analysis" / "robustness.md").read_text().splitlines()
    assert [cell.strip() for cell in table[0].split("|")[2:5]] == ["n", "greedy", "paraphrase"]
    unstar = next(line for line in table if line.startswith("| unstar"))
    cells = [float(cell) for cell in unstar.split("|")[2:-1]]  # one seed: means alone
    assert cells == [1, 0.1, 0.2, 0.1, 0.8, 0.3, 0.8, 0.9, 0.25, 0.4, 0.5, 0.3, 0.6]
    relative_md = (root / "analysis" / "relative_to_best.md").read_text().splitlines()
    assert relative_md[0].split("|")[-2].strip() == "WR"
    assert float(next(line for line in relative_md if "unstar" in line).split("|")[-2]) == 40


def test_jobs_that_never_started_are_reported(sweep: Path) -> None:
    for job_dir in sweep.glob("7"):
        for path in sorted(job_dir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        job_dir.rmdir()
    problems = read_sweep(sweep).problems

    never = problems[problems["error"].str.startswith("never started")]
    assert list(never["overrides"]) == ["method=unstar,seed=3"]
    assert list(never["method"]) == ["unstar"]


def test_an_ablation_gives_one_row_per_variant(tmp_path: Path) -> None:
    num = 0
    for rationale, ue in (("true", 0.8), ("false", 0.4)):
        for seed in (0, 1):
            overrides = {"method": "unstar", "method.rationale": rationale, "seed": seed}
            write_job(tmp_path, num, overrides, ok_results((ue, 0.5, 0.5, 0.5, 0.5), seed))
            num += 1
    write_job(tmp_path, num, {"method": "grad_ascent", "seed": 0}, ok_results((0.1,) * 5, 0))
    summary = summarise(read_sweep(tmp_path).jobs)

    assert list(summary.index) == [
        "unstar (method.rationale=true)",
        "unstar (method.rationale=false)",
        "grad_ascent",
    ]
    assert list(summary["criteria/unlearning_efficacy mean"]) == pytest.approx([0.8, 0.4, 0.1])


def test_criteria_fall_back_to_the_registry_definition_until_the_evaluation_reports_them() -> None:
    flat = {
        "unlearned/forget/rougeL_recall": 0.2,
        "unlearned/forget/leak_rate": 0.5,
        "unlearned/hard_retain/rougeL_recall": 0.5,
        "unlearned/general_retain/rougeL_recall": 1.0,
    }
    derived = job_criteria(flat)
    assert derived["model_utility"] == pytest.approx(2 / 3)  # H(0.5, 1.0), as the registry says
    # The judge's sub-metrics (and the attacks') are not in such a record: no stand-in formula.
    for name in CRITERIA:
        if name != "model_utility":
            assert math.isnan(derived[name]), name
    no_general = {k: v for k, v in flat.items() if "general_retain" not in k}
    assert job_criteria(no_general)["model_utility"] == pytest.approx(0.5)
    # Where the test halves were evaluated they are read, never the dev halves selection read.
    halves = {
        **flat,
        "unlearned/hard_retain_dev/rougeL_recall": 0.0,
        "unlearned/hard_retain_test/rougeL_recall": 1.0,
    }
    assert job_criteria(halves)["model_utility"] == 1.0

    reported = job_criteria({**flat, **{f"criteria/{name}": 0.25 for name in CRITERIA}})
    assert reported == dict.fromkeys(CRITERIA, 0.25)


def _one_seed_summary(values: dict[str, dict[str, float]]) -> pd.DataFrame:
    """A summary of one seed per method: ``values`` = method → column stem → mean."""
    rows = {method: {"n": 1} for method in values}
    for method, columns in values.items():
        for stem, value in columns.items():
            rows[method] |= {f"{stem} mean": value, f"{stem} std": math.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_registered_metric_is_ranked_by_its_declared_direction(higher_is_better: bool) -> None:
    spec = MetricSpec(
        "toy_error", frozenset({"generation"}), "mean", higher_is_better=higher_is_better,
        range=(0.0, 1.0), short="TE", column="toy/unlearned/error", compared_as="toy",
    )  # fmt: skip
    criteria_values = {f"criteria/{name}": 0.5 for name in CRITERIA}
    summary = _one_seed_summary(
        {
            "a": {**criteria_values, "toy/unlearned/error": 0.2},
            "b": {**criteria_values, "toy/unlearned/error": 0.6},
        }
    )
    with registered_metric(spec):
        relative = relative_to_best(summary)
        headers = shown(summary)
    if higher_is_better:
        assert relative.loc["b", "toy mean"] == pytest.approx(100)
        assert relative.loc["a", "toy mean"] == pytest.approx(0.2 / 0.6 * 100)
        assert headers["toy/unlearned/error"] == "TE ↑"
    else:  # 1 − error, relative to the best
        assert relative.loc["a", "toy mean"] == pytest.approx(100)
        assert relative.loc["b", "toy mean"] == pytest.approx(0.4 / 0.8 * 100)
        assert headers["toy/unlearned/error"] == "TE ↓"


def test_the_report_notebook_executes_on_a_sweep(sweep: Path) -> None:
    notebook = nbformat.read(ROOT / "analysis" / "report.ipynb", as_version=4)
    assert notebook.cells[0].source.startswith("SWEEP_DIR =")
    notebook.cells[0].source = f"SWEEP_DIR = {str(sweep)!r}"
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()

    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    text = "\n".join(str(out.get("data", {}).get("text/markdown", "")) for out in outputs)
    assert "grad_ascent" in text and "0.900 ± 0.100" in text and "100.0 ± 11.1" in text
    assert sum("image/png" in out.get("data", {}) for out in outputs) == 3
    assert any("RuntimeError: boom" in str(out.get("data", {})) for out in outputs)


def track(job_dir: Path, seed: int, results: dict[str, Any] | None) -> None:
    """A job's offline W&B run as the Tracker leaves it; ``results=None``: never finished, as a
    killed job leaves it (the next run's init closes it, with no status)."""
    wandb_cfg = {"enabled": True, "project": "unstar-bench", "mode": "offline"}
    config = {"seed": seed, "method": {"name": "unstar"}, "tracking": {"wandb": wandb_cfg}}
    tracking = OmegaConf.create({"wandb": wandb_cfg})
    tracker = Tracker.start(tracking, config, job_dir, name=f"unstar-s{seed}", group="sweep")
    if results is not None:
        tracker.finish({**results, "config": config}, None)


def test_a_rerun_jobs_abandoned_wandb_run_is_not_a_second_job(tmp_path: Path) -> None:
    track(tmp_path / "0", 0, None)  # killed, then the sweep re-ran: the same job again
    track(tmp_path / "0", 0, ok_results((0.5,) * 5, 0))
    track(tmp_path / "1", 1, {"status": "failed", "error": "RuntimeError: boom"})
    wandb.teardown()  # W&B writes a finished run's file in the background: wait for it
    assert len(list(tmp_path.glob("0/wandb/offline-run-*"))) == 2

    jobs = read_wandb(str(tmp_path)).jobs.set_index("seed")
    assert list(jobs.index) == [0, 1], "one row per job"
    assert jobs.loc[0, "status"] == "ok" and jobs.loc[1, "status"] == "failed"
    assert jobs.loc[0, "unlearned/forget/leak_rate"] == 0.0
    assert jobs.loc[0, "robustness/unlearned/worst_case_leak"] == pytest.approx(0.2)


def test_of_a_jobs_runs_the_latest_finished_counts_else_the_latest() -> None:
    def run(seed: int | None, status: str | None, started: str) -> WandbRun:
        config = {} if seed is None else {"seed": seed, "tracking": {"wandb": {"dir": started}}}
        summary = {} if status is None else {"status": status}
        return WandbRun(f"{seed}@{started}", "", "sweep", config, summary, started)

    given = [
        run(0, "ok", "1"),
        run(0, "failed", "3"),
        run(0, "ok", "2"),
        run(1, "failed", "1"),
        run(1, None, "2"),
        run(None, "unreadable", "1"),
    ]
    kept = one_run_per_job(given)
    assert [r.name for r in kept] == ["0@2", "1@2", "None@1"]


def test_the_config_keys_that_do_not_define_a_job_are_the_harness_ones() -> None:
    from benchmarks.job import NOT_RESULT_SHAPING

    assert runs.NOT_RESULT_SHAPING == NOT_RESULT_SHAPING
