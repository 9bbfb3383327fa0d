"""``experiment=paper_wpu``: the UnSTAR paper's setting composes, sweeps the five WPU forget_2
sets and the nine methods, and its job path runs on the tiny model (the hub is unreachable here,
so the model and data are overridden), printing the GPU estimate with its assumptions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.estimate import GPUS, Workload, describe, memory_gib, time_s

ROOT = Path(__file__).resolve().parents[1]
PAPER_METHODS = "unstar,grad_ascent,npo,prompt,prompt_distill,di,whp,whp_plus,rwhp"
#: The paper's setting on the tiny model: a CPU, the embedded data, seconds.
ON_TINY = (
    "experiment=paper_wpu",
    "model=tiny_random",
    "device=cpu",
    "data=wpu_mini",
    "data.forget_set=forget_1",
    "data.n_retain=4",
    "data.n_general_retain=4",
    "tracking=none",
    "eval=quick",
    "eval.max_new_tokens=4",
    "eval.leak.use_embedding=false",
)


def test_paper_wpu_composes_to_the_papers_setting() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=paper_wpu"], return_hydra_config=True)

    assert cfg.model.source == "hub"
    assert cfg.model.name_or_path == "mistralai/Mistral-7B-Instruct-v0.3"
    assert cfg.model.dtype == "bfloat16" and cfg.device == "cuda"
    assert (cfg.data.name, cfg.data.forget_set, cfg.target.kind) == ("wpu", "forget_2_1", "base")
    assert cfg.method.name == "unstar" and cfg.method.lora.enabled
    assert cfg.eval.max_new_tokens == 200 and cfg.eval.judge.kind == "local"
    assert cfg.eval.attacks.many_shot.shots == 100
    sweep = cfg.hydra.sweeper.params
    assert sweep["data.forget_set"] == ",".join(f"forget_2_{i}" for i in range(1, 6))
    assert sweep["method"] == PAPER_METHODS
    # LoRA applies to whichever method a job runs.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        npo = compose("config", overrides=["experiment=paper_wpu", "method=npo"])
    assert npo.method.name == "npo" and npo.method.lora.enabled


def test_cfg_job_shows_the_setting() -> None:
    shown = subprocess.run(
        [sys.executable, "run.py", "experiment=paper_wpu", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    setting = OmegaConf.create(shown.stdout[shown.stdout.index("seed:") :])  # after any log line
    assert setting.model.name_or_path == "mistralai/Mistral-7B-Instruct-v0.3"
    assert setting.data.forget_set == "forget_2_1" and setting.eval.max_new_tokens == 200


def test_paper_wpu_job_runs_on_the_tiny_model_and_prints_the_estimate(tmp_path: Path) -> None:
    """Through run.py, as a user runs it: choosing the experiment prints the estimate (on a CPU)."""
    overrides = [*ON_TINY, "method=grad_ascent", "method.max_steps=1"]
    job = subprocess.run(
        [sys.executable, "run.py", *overrides, f"hydra.run.dir={tmp_path / 'job'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert job.returncode == 0, job.stderr[-3000:]
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["config"]["model"]["dtype"] == "bfloat16"
    assert results["config"]["method"]["lora"]["enabled"]
    printed = job.stdout
    assert "GPU estimate (rough" in printed
    assert "2 bytes each, LoRA" in printed
    for gpu in GPUS:
        assert gpu.name in printed
    assert "assumptions:" in printed and "35% of the dense peak" in printed


def test_estimate_of_a_7b_lora_job_is_plausible() -> None:
    """Mistral-7B's shape: bf16 weights ≈ 13.5 GiB, a LoRA job fits an 80 GB GPU; full
    fine-tuning adds gradients and AdamW moments (3 × weights) and takes 1.5× the FLOPs."""
    lora = Workload(
        params=7_248_023_552,
        dtype_bytes=2,
        trainable=41_943_040,
        lora=True,
        layers=32,
        hidden=4096,
        heads=32,
        vocab=32768,
        batch_size=4,
        streams=2,
        max_tokens=128,
        train_tokens=200_000,
        answers=400,
        new_tokens=200,
        prompt_tokens=60,
        gen_batch=16,
        long_prompts=40,
        long_prompt_tokens=3896,
    )
    memory = memory_gib(lora)
    assert memory["weights"] == pytest.approx(13.5, abs=0.1)
    assert 14 < sum(memory.values()) < 30
    full = Workload(**{**lora.__dict__, "lora": False, "trainable": lora.params})
    assert memory_gib(full)["trainable state"] == pytest.approx(3 * memory["weights"])
    h100 = GPUS[1]
    assert time_s(full, h100)["training"] == pytest.approx(1.5 * time_s(lora, h100)["training"])
    text = describe(full)
    assert "frozen reference copy" in text and "DOES NOT FIT" not in text.split("\n")[3]
