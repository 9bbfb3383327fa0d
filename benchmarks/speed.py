"""Where a job's time goes, against what this machine allows.

    python -m benchmarks.speed [overrides...]            # profile one job (default: the default job)
    python -m benchmarks.speed --curve [overrides...]    # cost against the forget set's size
    python -m benchmarks.speed --check [overrides...]    # shared-prefix passes against plain ones

The profile runs one job (``conf/config.yaml`` plus the overrides, W&B off, never skipped as a
repeat) and splits its time by phase and by the kind of work (training, generation, scoring: the
work ledger of :mod:`benchmarks.costs`). For each it gives seconds, token rows computed, tokens
trained on or generated, the FLOP/s reached (2·N FLOPs per token row forward, 4·N with gradients
through frozen weights as in LoRA, 6·N with full gradients; N: :func:`benchmarks.floors.model_shape`)
and, for generation, tokens/s and GB/s of weights read, beside the floors measured in the same
process before and after the job (:mod:`benchmarks.floors`): ``x floor`` is the measured time over
the least time those forwards could take here. It prints a table and writes
``outputs/speed/<time>/speed.json``; the job's own results are in the same directory.

``--curve`` runs UnSTAR and gradient ascent on wpu_mini forget sets of 2, 5 and 20 persons (10, 25
and 100 forget questions; ``--sets`` and ``--methods`` choose others, e.g. ``--sets "data=wpu_real
data.forget_set=forget_25_1"`` for real WPU persons) and tabulates each job's phases against the
number of forget questions (``curve.json``).

``--check`` runs the shared-prefix passes (:mod:`benchmarks.prefix`) and the plain ones in
alternation on the job's target model (the evaluation's greedy answers and scores, UnSTAR's
sampled paraphrases, LoRA training steps) and reports the seconds of each and what differs
(answers, samples, log-probs, losses, gradients): what the speed-up costs in results. It then
times LoRA steps against the same steps with the adapter off, each beside the matmul floor of
the rows it computed: how far from the floor plain torch's forward and backward of this model is.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from peft import get_peft_model

from benchmarks.components import discover
from benchmarks.costs import COSTS, counting_forwards
from benchmarks.data import load_data
from benchmarks.evaluation.evaluate import eval_items
from benchmarks.evaluation.generation import answer_logprobs, generate
from benchmarks.floors import ModelShape, forward_floor_s, measure, model_shape
from benchmarks.job import run_job
from benchmarks.methods import qa_pairs
from benchmarks.models import cache_dir, load_model, use_cpu_threads
from benchmarks.prompting import Prompter
from benchmarks.target import prepare_target
from benchmarks.training import (
    Pair,
    collate,
    encode_example,
    lora_config,
    mean_nll,
    token_logprobs,
)
from unstar import prompts as unstar_prompts

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DEFAULTS = ("tracking=none", "force=true")
#: The curve's forget sets: wpu_mini persons (5 facts each).
CURVE_SETS = ("data.forget_set=forget_2", "data.forget_set=forget_5", "data.forget_set=forget_20")
CURVE_METHODS = ("unstar", "grad_ascent")


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The job's config as ``python run.py`` would compose it; the user's overrides come last."""
    discover()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*DEFAULTS, *overrides])


def work_figures(
    entry: dict[str, Any], shape: ModelShape, floors: dict[str, Any]
) -> dict[str, Any]:
    """One ledger entry's seconds, work done, rate reached and distance from the floor."""
    seconds = float(entry.get("seconds", 0.0))
    forwards = entry.get("forwards", [])
    flop = sum(
        n * (1 + grad) * 2 * (shape.body_params * rows + shape.head_params * head)
        for rows, head, grad, n in forwards
    )
    floor = sum(
        n * forward_floor_s(shape, rows, head, grad, floors) for rows, head, grad, n in forwards
    )
    reads = sum(n * (1 + grad) * shape.weight_bytes for _, _, grad, n in forwards)
    generated = int(entry.get("generated_tokens", 0))
    return {
        "seconds": round(seconds, 3),
        "forward_calls": sum(n for *_, n in forwards),
        "token_rows": sum(rows * n for rows, _, _, n in forwards),
        "train_tokens": int(entry.get("train_tokens", 0)),
        "generated_tokens": generated,
        "flop": flop,
        "flop_per_s": flop / seconds if seconds else None,
        "floor_s": round(floor, 3),
        "x_floor": seconds / floor if floor and seconds else None,
        "weights_gb_per_s": reads / seconds / 1e9 if seconds else None,
        "generated_tokens_per_s": generated / seconds if seconds and generated else None,
    }


def _sum_entries(entries: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"forwards": []}
    for entry in entries:
        for key, value in entry.items():
            if key == "forwards":
                total["forwards"] += value
            else:
                total[key] = total.get(key, 0) + value
    return total


#: The profile's summary rows: a name and which (phase, kind) ledger entries it sums.
GROUPS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("target fine-tune", lambda phase, kind: phase == "prepare_target"),
    ("method: generation", lambda phase, kind: phase == "unlearn" and kind == "generate"),
    ("method: training", lambda phase, kind: phase == "unlearn" and kind == "train"),
    ("method: other", lambda phase, kind: phase == "unlearn" and kind in ("score", "other")),
    ("evaluation generation", lambda p, k: p.startswith("eval_") and k == "generate"),
    ("evaluation scoring", lambda p, k: p.startswith("eval_") and k in ("score", "other")),
    ("reference model", lambda phase, kind: phase == "suite/reference"),
    ("suite", lambda phase, kind: phase.startswith("suite/") and phase != "suite/reference"),
)


def summarise(
    ledger: dict[str, dict[str, dict[str, Any]]], shape: ModelShape, floors: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The profile's rows: each group of :data:`GROUPS`, then every (phase, kind) entry."""
    rows: dict[str, dict[str, Any]] = {}
    for name, chosen in GROUPS:
        entries = [e for p, kinds in ledger.items() for k, e in kinds.items() if chosen(p, k)]
        if entries:
            rows[name] = work_figures(_sum_entries(entries), shape, floors)
    for phase, kinds in sorted(ledger.items()):
        for kind, entry in sorted(kinds.items()):
            if entry.get("seconds") or entry.get("forwards"):
                rows[f"{phase} · {kind}"] = work_figures(entry, shape, floors)
    return rows


def _fmt(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def print_table(rows: dict[str, dict[str, Any]], floors: dict[str, Any], wall: float) -> None:
    header = (
        f"{'phase':<44} {'s':>8} {'rows':>8} {'trained':>8} {'gen.':>6} "
        f"{'GFLOP/s':>8} {'floor s':>8} {'x floor':>7} {'GB/s':>6} {'tok/s':>6}"
    )
    print(header)
    print("-" * len(header))
    for i, (name, r) in enumerate(rows.items()):
        if i == len([n for n, _ in GROUPS if n in rows]):
            print("-" * len(header))
        print(
            f"{name[:44]:<44} {r['seconds']:8.1f} {r['token_rows']:8d} {r['train_tokens']:8d} "
            f"{r['generated_tokens']:6d} {_fmt(r['flop_per_s'], 1e9):>8} {r['floor_s']:8.1f} "
            f"{_fmt(r['x_floor'], digits=2):>7} {_fmt(r['weights_gb_per_s']):>6} "
            f"{_fmt(r['generated_tokens_per_s']):>6}"
        )
    accounted = sum(r["seconds"] for name, r in rows.items() if "·" in name)
    print(
        f"job wall clock {wall:.1f} s; outside training, generation and scoring {wall - accounted:.1f} s"
    )
    print(
        f"floors ({floors['threads']} threads, {floors['cpu']}): fp32 matmul "
        f"{floors['matmul_flops_fp32'] / 1e9:.0f} GFLOP/s at {floors['matmul_rows']} rows"
        + (
            f", bf16 {floors['matmul_flops_bf16'] / 1e9:.0f} GFLOP/s ({', '.join(floors['bf16_flags'])})"
            if "matmul_flops_bf16" in floors
            else ", no bf16 matmul support in this CPU's flags"
        )
        + f"; weight-sized read {floors['read_bytes_per_s'] / 1e9:.1f} GB/s "
        f"({floors['read_bytes'] / 1e9:.2f} GB)"
    )


def slower_floors(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The floors measured before and after the job, each at its lower value: the machine's
    load can only have slowed the floor; comparing the job against the lower one flatters neither."""
    merged = dict(first)
    for key in ("matmul_flops_fp32", "matmul_flops_bf16", "read_bytes_per_s"):
        if key in first and key in second:
            merged[key] = min(first[key], second[key])
    return merged


def profile(overrides: Sequence[str], out: Path) -> dict[str, Any]:
    """Run one job under the ledger and write ``speed.json`` beside its results."""
    cfg = compose_config(overrides)
    use_cpu_threads(cfg.get("threads"))
    model, _ = load_model(cfg.model, cache_dir(cfg.get("cache_dir")), cfg.device)
    shape = model_shape(model)
    del model
    load_before = list(os.getloadavg())
    before = measure(shape)
    start = time.perf_counter()
    results = run_job(cfg, out)
    wall = time.perf_counter() - start
    ledger = COSTS.work_as_dict()
    after = measure(shape)
    floors = slower_floors(before, after)
    rows = summarise(ledger, shape, floors)
    print(f"\nProfile of {cfg.method.name} on {cfg.data.name} (results in {out}):")
    print_table(rows, floors, wall)
    record = {
        "overrides": list(overrides),
        "method": cfg.method.name,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "model": {
            "body_params": shape.body_params,
            "head_params": shape.head_params,
            "weight_bytes": shape.weight_bytes,
        },
        "floors": {"before": before, "after": after, "used": floors},
        "job_wall_s": wall,
        "rows": rows,
        "ledger": ledger,
        "timings_s": results["timings_s"],
        "costs": results["costs"],
        "metrics": results.get("metrics"),
        "method_metrics": results.get("method_metrics"),
    }
    (out / "speed.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {out / 'speed.json'}")
    return record


def curve(
    overrides: Sequence[str], out: Path, sets: Sequence[str], methods: Sequence[str]
) -> list[dict[str, Any]]:
    """Each method on each forget set, one job each: seconds per phase against forget questions."""
    points = []
    for data in sets:
        for method in methods:
            job_overrides = [f"method={method}", *data.split(), *overrides]
            name = f"{method}-{data.split()[-1].rsplit('=', 1)[-1]}"
            record = profile(job_overrides, out / name)
            results_dir = out / name
            points.append(
                {
                    "method": method,
                    "data": data,
                    "forget_questions": _forget_questions(compose_config(job_overrides)),
                    "job_s": record["job_wall_s"],
                    "phases_s": {k: v for k, v in record["timings_s"].items() if k.count("/") == 0},
                    "groups": {k: v["seconds"] for k, v in record["rows"].items() if "·" not in k},
                    "train_tokens": record["costs"].get("unlearn", {}).get("train_tokens", 0),
                    "load_average": record["load_average_after"],
                    "results": str(results_dir),
                }
            )
            (out / "curve.json").write_text(json.dumps(points, indent=2))
    print_curve(points)
    return points


def _forget_questions(cfg: DictConfig) -> int:
    return len(load_data(cfg.data).forget)


def print_curve(points: list[dict[str, Any]]) -> None:
    groups = ("method: generation", "method: training", "evaluation generation", "suite")
    print(
        f"\n{'method':<12} {'forget q':>8} {'unlearn s':>10} "
        + " ".join(f"{g.split(': ')[-1][:10]:>10}" for g in groups)
        + f" {'tokens':>8} {'job s':>8}"
    )
    for p in points:
        print(
            f"{p['method']:<12} {p['forget_questions']:>8} {p['phases_s'].get('unlearn', 0):10.1f} "
            + " ".join(f"{p['groups'].get(g, 0.0):10.1f}" for g in groups)
            + f" {p['train_tokens']:8d} {p['job_s']:8.1f}"
        )


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class AB:
    """Seconds of two ways of doing the same work, run in alternation chunk by chunk (the fast
    way first, then the plain one first), so that a machine's changing load falls on both alike."""

    def __init__(self, fast: str = "shared", plain: str = "plain") -> None:
        self.names = (fast, plain)
        self.seconds = {fast: 0.0, plain: 0.0}

    def run(self, chunk: int, fast: Callable[[], Any], plain: Callable[[], Any]) -> tuple:
        found: dict[str, Any] = {}
        order = list(zip(self.names, (fast, plain), strict=True))
        for name, work in order if chunk % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            found[name] = work()
            self.seconds[name] += time.perf_counter() - start
        return found[self.names[0]], found[self.names[1]]

    def as_dict(self) -> dict[str, float]:
        fast, plain = (self.seconds[name] for name in self.names)
        return {**{k: round(v, 2) for k, v in self.seconds.items()},
                "speed_up": plain / fast if fast else None}  # fmt: skip


def _plain_nll(model: Any, batch: dict[str, Any]) -> Any:
    """Mean answer NLL from a plain forward, every position's logits: the trainer's loss
    before :func:`benchmarks.prefix.label_logits`."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    picked, mask = token_logprobs(logits, batch["labels"])
    return -picked.sum() / mask.sum().clamp(min=1)


def loss_and_grads(model: Any, batch: dict[str, Any], nll: Callable) -> tuple[float, Any]:
    """The loss ``nll`` gives the batch and the gradients of every trainable weight, flattened."""
    model.zero_grad()
    loss = nll(model, batch)
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads)


def _check_generation(model, tokenizer, prompts: list[str], eval_cfg: Any) -> dict[str, Any]:
    timing, changed, size = AB(), 0, eval_cfg.batch_size
    options = {"max_new_tokens": eval_cfg.max_new_tokens, "batch_size": size}
    for i, chunk in enumerate(_chunks(prompts, size)):
        shared, plain = timing.run(
            i,
            lambda c=chunk: generate(model, tokenizer, c, **options),
            lambda c=chunk: generate(model, tokenizer, c, **options, share_prefix=False),
        )
        changed += sum(a != b for a, b in zip(shared, plain, strict=True))
    return {**timing.as_dict(), "answers_changed": changed}


def _check_scoring(model, tokenizer, pairs: list[tuple[str, str]], size: int) -> dict[str, Any]:
    timing, worst = AB(), 0.0
    for i, chunk in enumerate(_chunks(pairs, 4 * size)):
        args = ([p for p, _ in chunk], [a for _, a in chunk])
        shared, plain = timing.run(
            i,
            lambda a=args: answer_logprobs(model, tokenizer, *a, batch_size=size),
            lambda a=args: answer_logprobs(
                model, tokenizer, *a, batch_size=size, share_prefix=False
            ),
        )
        gaps = (float(np.abs(x - y).max()) for x, y in zip(shared, plain, strict=True))
        worst = max(worst, *gaps)
    return {**timing.as_dict(), "pairs": len(pairs), "max_token_logprob_difference": worst}


def _check_sampling(
    model, tokenizer, few_shot: list[str], size: int, *, prompts: int, samples: int,
    timing: AB, plain: dict[str, bool],
) -> dict[str, Any]:  # fmt: skip
    """UnSTAR's candidates, sampled with a seed ``prompts`` at a time, by ``generate`` as it is
    and with the ``plain`` options: the same draws either way, up to rounding."""
    changed, drawn = 0, 0
    for i, chunk in enumerate(_chunks(few_shot, prompts)):
        options = {"max_new_tokens": 40, "temperature": 0.9, "num_samples": samples,
                   "stop_strings": ["\n"], "seed": i, "batch_size": size}  # fmt: skip
        fast, slow = timing.run(
            i,
            lambda c=chunk, o=options: generate(model, tokenizer, c, **o),
            lambda c=chunk, o=options: generate(model, tokenizer, c, **o, **plain),
        )
        pairs = zip(fast, slow, strict=True)
        changed += sum(a != b for x, y in pairs for a, b in zip(x, y, strict=True))
        drawn += sum(len(x) for x in fast)
    return {**timing.as_dict(), "samples": drawn, "samples_changed": changed}


def _check_training(model, batches: list[dict[str, Any]]) -> dict[str, Any]:
    timing, loss_gap, grad_gap = AB(), 0.0, 0.0
    for i, batch in enumerate(batches):
        (loss, grads), (plain_loss, plain_grads) = timing.run(
            i,
            lambda b=batch: loss_and_grads(model, b, mean_nll),
            lambda b=batch: loss_and_grads(model, b, _plain_nll),
        )
        loss_gap = max(loss_gap, abs(loss - plain_loss) / abs(plain_loss))
        grad_gap = max(grad_gap, float((grads - plain_grads).abs().max() / plain_grads.abs().max()))
    return {
        **timing.as_dict(), "batches": len(batches), "max_relative_loss_difference": loss_gap,
        "max_gradient_difference_relative_to_largest": grad_gap,
    }  # fmt: skip


def _frozen_step(model: Any, batch: dict[str, Any]) -> None:
    """A training step's forward and backward with the adapter off: gradients flow from the loss
    to the input embeddings through every frozen layer, and no weight gets one. The least work
    any step of this model does in plain torch: matrix products, attention and element-wise."""
    embeddings = model.get_input_embeddings()
    handle = embeddings.register_forward_hook(lambda m, a, out: out.detach().requires_grad_())
    try:
        with model.disable_adapter():
            mean_nll(model, batch).backward()
    finally:
        handle.remove()


def _check_step_floor(
    model: Any, batches: list[dict[str, Any]], shape: ModelShape
) -> dict[str, Any]:
    """LoRA steps (forward and backward, as UnSTAR trains) and the same steps with the adapter
    off, in alternation, each against the matmul floor of the forwards it computed (the ledger's
    token rows at 4·N FLOPs a row): how much of a step's distance from the floor is the adapter's
    and how much any plain-torch step of this model has. ``shape``: the model's without adapter."""
    steps = {
        "lora": lambda b: loss_and_grads(model, b, mean_nll),
        "frozen": lambda b: _frozen_step(model, b),
    }
    COSTS.clear()
    with counting_forwards(model):
        for i, batch in enumerate(batches):
            for name in list(steps) if i % 2 == 0 else list(steps)[::-1]:
                with COSTS.phase(f"check/{name}"), COSTS.timed("train"):
                    steps[name](batch)
    floors = measure(shape)
    ledger = COSTS.work_as_dict()
    report: dict[str, Any] = {"floors": floors}
    for name in steps:
        figures = work_figures(ledger[f"check/{name}"]["train"], shape, floors)
        kept = ("seconds", "token_rows", "flop_per_s", "floor_s", "x_floor")
        report[name] = {k: figures[k] for k in kept}
    report["adapter_share_of_lora_step"] = (
        1 - report["frozen"]["seconds"] / report["lora"]["seconds"]
    )
    return report


def check(overrides: Sequence[str], out: Path) -> dict[str, Any]:
    """Shared-prefix passes against plain ones, in alternation, on the job's target model: the
    evaluation's greedy answers and answer scores, UnSTAR's sampled paraphrases, and LoRA
    training steps on the forget questions and retain pairs (as UnSTAR trains); seconds of each
    and what differs (answers, samples, log-probs, losses, gradients)."""
    cfg = compose_config(overrides)
    use_cpu_threads(cfg.get("threads"))
    cache = cache_dir(cfg.get("cache_dir"))
    base, tokenizer = load_model(cfg.model, cache, cfg.device)
    prompter = Prompter()
    model, data, _ = prepare_target(
        base, tokenizer, load_data(cfg.data), cfg, cache=cache, prompter=prompter
    )
    items = eval_items(data, tuple(cfg.eval.views))
    prompts = [prompter(tokenizer, item.question) for item in items]
    size = cfg.eval.batch_size
    load = [list(os.getloadavg())]
    report: dict[str, Any] = {"prompts": len(prompts), "threads": torch.get_num_threads()}
    report["evaluation generation"] = _check_generation(model, tokenizer, prompts, cfg.eval)
    pairs = [(p, a) for p, item in zip(prompts, items, strict=True)
             for a in (item.record.answer, *item.record.perturbed_answers)]  # fmt: skip
    report["evaluation scoring"] = _check_scoring(model, tokenizer, pairs, size)
    few_shot = [unstar_prompts.PARAPHRASE.format(question=r.question) for r in data.forget]
    report["UnSTAR sampled paraphrases"] = _check_sampling(
        model, tokenizer, few_shot, size, prompts=4, samples=8, timing=AB(),
        plain={"share_prefix": False},
    )  # fmt: skip
    # Reserved room against a cache grown by concatenation (transformers' own): the copies saved.
    report["UnSTAR sampled paraphrases, reserved cache room"] = _check_sampling(
        model, tokenizer, few_shot, cfg.method.generation_batch_size, prompts=16, samples=16,
        timing=AB("reserved", "concatenated"), plain={"reserve_room": False},
    )  # fmt: skip
    shape = model_shape(model)
    lora = get_peft_model(model, lora_config(cfg.method.lora)) if cfg.method.lora.enabled else model
    lora.train()
    wrong = [Pair(prompter(tokenizer, r.question), (r.perturbed_answers or ("no",))[0])
             for r in data.forget]  # fmt: skip
    retain = qa_pairs(list(data.retain), tokenizer, prompter)
    step = cfg.method.batch_size
    batches = [
        collate(
            [encode_example(tokenizer, pair, cfg.method.max_length) for pair in chunk],
            tokenizer.pad_token_id,
        )
        for chunk in _chunks(wrong, step) + _chunks(retain, step)
    ]
    report["training steps (forward and backward)"] = _check_training(lora, batches)
    if cfg.method.lora.enabled:
        report["training step against the matmul floor"] = _check_step_floor(lora, batches, shape)
    load.append(list(os.getloadavg()))
    report["load_average"] = load
    print(json.dumps(report, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--curve", action="store_true", help="methods x forget sets, one job each")
    mode.add_argument("--check", action="store_true", help="shared-prefix vs plain passes")
    parser.add_argument("--sets", nargs="+", default=list(CURVE_SETS),
                        help="--curve: data overrides, one quoted string per forget set")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(CURVE_METHODS), help="--curve")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/speed/<time>")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = parser.parse_args(argv)
    out = args.out or Path("outputs") / "speed" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if args.curve:
        curve(args.overrides, out, args.sets, args.methods)
    elif args.check:
        check(args.overrides, out)
    else:
        profile(args.overrides, out)


if __name__ == "__main__":
    main()
