"""Where a job's time goes, and what batched generation buys on this machine.

    python -m benchmarks.speed [overrides...]      # e.g. model=tiny_random for a quick look

Runs one job (``conf/config.yaml`` plus the overrides, W&B off, never skipped as a repeat) and
prints its per-phase times from ``results["timings_s"]``. Evaluation is mostly greedy generation,
so it then generates the evaluation prompts (the forget and retain views) with the base model twice,
in batches of ``eval.batch_size`` and one at a time, and prints both times, the speed-up and how
many answers batching changed (left padding may shift a greedy answer; a change would make
batched evaluation a source of noise, not just a faster path).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from benchmarks.data import load_data
from benchmarks.evaluation.evaluate import eval_items
from benchmarks.evaluation.generation import generate
from benchmarks.job import run_job
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DEFAULTS = ("tracking=none", "force=true")


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The job's config as ``python run.py`` would compose it; the user's overrides come last."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*DEFAULTS, *overrides])


def time_generation(cfg: DictConfig, batch_size: int) -> tuple[float, list[str]]:
    """Seconds to answer every evaluation prompt greedily with the base model, and the answers."""
    model, tokenizer = load_model(cfg.model, cache_dir(cfg.get("cache_dir")), cfg.device)
    items = eval_items(load_data(cfg.data), tuple(cfg.eval.views))
    prompts = [Prompter()(tokenizer, item.question) for item in items]
    start = time.perf_counter()
    answers = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=batch_size,
        desc=f"generate, batch {batch_size}",
    )
    return time.perf_counter() - start, [a[0] for a in answers]


def main(argv: Sequence[str] | None = None) -> None:
    cfg = compose_config(sys.argv[1:] if argv is None else argv)
    output_dir = Path("outputs") / "speed" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    start = time.perf_counter()
    results = run_job(cfg, output_dir)
    wall = time.perf_counter() - start
    timings = {**results["timings_s"], "job wall clock": wall}  # phases nest: no sum
    width = max(map(len, timings))
    print(f"\nJob phases ({cfg.method.name}, results in {output_dir}):")
    for phase, seconds in timings.items():
        print(f"  {phase:<{width}} {seconds:8.2f} s")

    batched, batched_answers = time_generation(cfg, cfg.eval.batch_size)
    single, single_answers = time_generation(cfg, 1)
    changed = sum(a != b for a, b in zip(batched_answers, single_answers, strict=True))
    print(f"\nGenerating {len(single_answers)} evaluation answers with the base model:")
    print(f"  batch {cfg.eval.batch_size:<10} {batched:8.2f} s")
    print(f"  one at a time    {single:8.2f} s")
    print(f"  speed-up         {single / batched:8.2f} x")
    print(f"  answers changed by batching: {changed} of {len(single_answers)}")


if __name__ == "__main__":
    main()
