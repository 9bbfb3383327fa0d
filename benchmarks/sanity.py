"""Sanity check of the metrics: models whose behaviour is known must rank as each metric's
definition implies, or the metric is broken.

``python -m benchmarks.sanity [--out FILE] [overrides]`` composes the job config as ``run.py`` does
(``model=...``, ``data=...``, ``eval=...``; ``target.kind`` must be ``finetune``) and builds four
models next to each other:

- ``target``: the base model fine-tuned on the task (as a job prepares it, from the same cache);
- ``base``: the base model, which never learned the facts: it looks forgotten by construction;
- ``constant``: the base model with its logits forced onto one token, so it says one word again
  and again (the last token of " the": " the" in BPE vocabularies, "e" in a byte-level one);
- ``random``: the base model with random logits (i.i.d. normal: about uniform), so even greedy
  decoding emits random tokens.

Each is evaluated by :func:`~benchmarks.evaluation.evaluate.evaluate_model` and the suite's cheap
families (``privacy``, ``tofu``, ``criteria``, where ``eval.suite`` has them; the judge is the
configured one), then every relation of :data:`EXPECTED` is checked. It prints the metrics and the
relations, writes both as JSON, and exits 1 if a relation fails. A relation whose metric was not
measured (the data has no holdout, the judge's fluency model cannot tell fluent text from word
salad) is reported as not applicable, with the reason, and does not fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from tabulate import tabulate
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from benchmarks.cache import atomic_write_text
from benchmarks.components import discover
from benchmarks.config import ConfigError, refuse_secret_overrides, validate
from benchmarks.data import load_data
from benchmarks.evaluation.evaluate import evaluate_model
from benchmarks.evaluation.suite import ModelRun, Suite, check_suite
from benchmarks.heldout import fill_paraphrases
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter
from benchmarks.target import prepare_target

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MODELS = ("target", "base", "constant", "random")
#: The suite families the check runs: each adds at most one scoring pass per model.
FAMILIES = ("privacy", "tofu", "criteria")
#: The word the constant model repeats (its last token, see the module docstring).
CONSTANT_WORD = " the"

Side = str | tuple[str, ...] | float


@dataclass(frozen=True)
class Expect:
    """``metric(left) op right``; ``right`` is a model, the best (highest) of several models, or
    a number. ``op`` is ``<`` or ``>``, strict: a tie is a misranking."""

    metric: str
    left: str
    op: str
    right: Side
    why: str


#: Where each model must stand, and why its definition implies it. ``(a, b)``: the best of a and b.
EXPECTED: tuple[Expect, ...] = (
    # Forget efficacy: the base model never learned the facts, so it must look forgotten.
    Expect("forget/rougeL_recall", "base", "<", "target", "the base model never learned the facts"),
    Expect("forget/leak_rate", "base", "<", "target", "the base model never learned the facts"),
    Expect("forget/answer_prob", "base", "<", "target", "the base model never learned the facts"),
    Expect(
        "criteria/unlearning_efficacy", "base", ">", "target", "the base never learned the facts"
    ),
    # ...and so does a model that says nothing: efficacy alone cannot tell destroying a model
    # from unlearning (utility and quality must).
    Expect("criteria/unlearning_efficacy", "constant", ">", "target", "one word leaks nothing"),
    Expect("criteria/unlearning_efficacy", "random", ">", "target", "random tokens leak nothing"),
    # Utility and quality: a degenerate model must not win.
    *(
        Expect(metric, model, "<", ("base", "target"), why)
        for metric, why in (
            ("hard_retain_test/rougeL_recall", "degenerate output recalls no retain answer"),
            ("general_retain_test/rougeL_recall", "degenerate output recalls no retain answer"),
            ("criteria/model_utility", "degenerate output recalls no retain answer"),
            ("tofu/model_utility", "degenerate models do not prefer the true retain answers"),
            ("criteria/response_quality", "one repeated word or random tokens are not fluent"),
        )
        for model in ("constant", "random")
    ),
    # Membership inference: the forget set is the target's training data, not the base model's.
    Expect(
        "privacy/auc/loss", "target", ">", "base", "only the target was trained on the forget set"
    ),
    Expect("privacy/auc/loss", "target", ">", 0.8, "the target memorised its training data"),
    Expect("privacy/auc/loss", "base", ">", 0.2, "forget and holdout are alike to the base model"),
    Expect("privacy/auc/loss", "base", "<", 0.8, "forget and holdout are alike to the base model"),
)


# -- the degenerate models ------------------------------------------------------------------------


def constant_model(model: PreTrainedModel, token_id: int) -> PreTrainedModel:
    """``model`` (changed in place) whose every next-token distribution is one token: greedy
    decoding repeats it, and every other token scores about -30 nats."""

    def force(module: torch.nn.Module, args: Any, output: Any) -> Any:
        forced = torch.full_like(output.logits, -30.0)
        forced[..., token_id] = 0.0
        output.logits = forced
        return output

    model.register_forward_hook(force)
    return model


def random_model(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """``model`` (changed in place) with i.i.d. standard normal logits: about uniform next-token
    distributions whose argmax is a random token, so greedy decoding emits random tokens."""
    generator = torch.Generator(device=model.device).manual_seed(seed)

    def noise(module: torch.nn.Module, args: Any, output: Any) -> Any:
        logits = output.logits
        output.logits = torch.randn(
            logits.shape, generator=generator, device=logits.device, dtype=logits.dtype
        )
        return output

    model.register_forward_hook(noise)
    return model


def constant_token(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer(CONSTANT_WORD, add_special_tokens=False)["input_ids"][-1]


# -- measuring ------------------------------------------------------------------------------------


def build_models(
    cfg: DictConfig, cache: Path, prompter: Prompter
) -> tuple[dict[str, PreTrainedModel], PreTrainedTokenizerBase, Any]:
    """The four models, their tokenizer and the data (as the target was prepared on it)."""
    if cfg.target.kind != "finetune":
        raise ConfigError(
            f"target.kind={cfg.target.kind!r}: the sanity check needs target=finetune, so that "
            "the base model does not know the facts the target learned"
        )

    def fresh() -> PreTrainedModel:
        return load_model(cfg.model, cache, cfg.device)[0]

    base, tokenizer = load_model(cfg.model, cache, cfg.device)
    data, _ = fill_paraphrases(base, tokenizer, load_data(cfg.data), cfg, cache)
    target, data, _ = prepare_target(fresh(), tokenizer, data, cfg, cache=cache, prompter=prompter)
    models = {
        "target": target.eval(),
        "base": base,
        "constant": constant_model(fresh(), constant_token(tokenizer)),
        "random": random_model(fresh(), cfg.seed),
    }
    return models, tokenizer, data


def measure(
    models: dict[str, PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    data: Any,
    eval_cfg: Any,
    prompter: Prompter,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Each model's metrics, flat (``view/metric``, ``criteria/name``, ``tofu/model_utility``,
    ``privacy/auc/score``), and why any metric was not measured."""
    runs = {}
    for name, model in models.items():
        metrics, rows = evaluate_model(model, tokenizer, data, eval_cfg, prompter, name)
        runs[name] = ModelRun(name, prompter, metrics, rows, model)
    suite = Suite(
        eval_cfg,
        data=data,
        tokenizer=tokenizer,
        runs=runs,
        load_original=lambda: models["target"],
        load_base=lambda: models["base"],
        reference=None,
        timer=lambda phase: nullcontext(),
    )
    flat: dict[str, dict[str, float]] = {}
    missing: dict[str, str] = {}
    for name, run in runs.items():
        values = {
            f"{view}/{metric}": value
            for view, per_metric in run.metrics.items()
            for metric, value in per_metric.items()
        }
        results = suite.evaluate(run)
        values |= {f"criteria/{k}": v for k, v in results.get("criteria", {}).items()}
        if (results.get("tofu") or {}).get("model_utility") is not None:
            values["tofu/model_utility"] = results["tofu"]["model_utility"]
        privacy = results.get("privacy", {})
        values |= {f"privacy/auc/{k}": v for k, v in privacy.get("auc", {}).items()}
        if "skipped" in privacy:
            missing["privacy/"] = privacy["skipped"]
        scale = results.get("judge", {}).get("fluency_scale")
        if scale and not scale["usable"]:
            values.pop("criteria/response_quality", None)
            missing["criteria/response_quality"] = (
                f"the judge's fluency model puts only {scale['separation']:.0%} of fluent anchor "
                "answers above word salad: it cannot tell fluent text from gibberish"
            )
        flat[name] = {k: float(v) for k, v in values.items() if v is not None}
    if suite.errors:  # a judge failure: the criteria that need it are None
        missing["criteria/"] = "; ".join(suite.errors.values())
    return flat, missing


# -- checking -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One relation as measured: ``ok`` None when a value is missing (``note`` says why)."""

    relation: str
    metric: str
    left: float | None
    right: float | None
    ok: bool | None
    why: str
    note: str = ""


def describe(expect: Expect) -> str:
    right = expect.right
    if isinstance(right, tuple):
        right = f"best of ({', '.join(right)})"
    return f"{expect.left} {expect.op} {right}"


def check(
    measured: dict[str, dict[str, float]],
    missing: dict[str, str] | None = None,
    expected: Sequence[Expect] | None = None,
) -> list[Verdict]:
    """Every relation of ``expected`` (default :data:`EXPECTED`) on the measured values."""
    missing = missing or {}
    verdicts = []
    for expect in EXPECTED if expected is None else expected:
        left = measured.get(expect.left, {}).get(expect.metric)
        if isinstance(expect.right, float | int):
            right: float | None = float(expect.right)
        else:
            names = expect.right if isinstance(expect.right, tuple) else (expect.right,)
            values = [measured.get(n, {}).get(expect.metric) for n in names]
            right = None if any(v is None for v in values) else max(values)  # type: ignore[type-var]
        if left is None or right is None:
            reason = next(
                (why for key, why in missing.items() if expect.metric.startswith(key)),
                "not measured under this config",
            )
            verdicts.append(
                Verdict(describe(expect), expect.metric, left, right, None, expect.why, reason)
            )
            continue
        ok = left < right if expect.op == "<" else left > right
        verdicts.append(Verdict(describe(expect), expect.metric, left, right, ok, expect.why))
    return verdicts


def metrics_table(measured: dict[str, dict[str, float]]) -> str:
    metrics = sorted({m for values in measured.values() for m in values})
    rows = [[m, *(_number(measured[name].get(m)) for name in measured)] for m in metrics]
    return tabulate(rows, headers=["metric", *measured], tablefmt="github")


def verdicts_table(verdicts: Sequence[Verdict]) -> str:
    status = {True: "ok", False: "MISRANKED", None: "n/a"}
    rows = [
        [v.metric, v.relation, _number(v.left), _number(v.right), status[v.ok], v.note or v.why]
        for v in verdicts
    ]
    headers = ["metric", "expected", "left", "right", "", "why"]
    return tabulate(rows, headers=headers, tablefmt="github")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# -- entry point ----------------------------------------------------------------------------------


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The job config of ``conf/`` with ``overrides``, validated as a job's would be."""
    refuse_secret_overrides(list(overrides))
    discover()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    validate(cfg)
    return cfg


def run(overrides: Sequence[str], out: Path) -> tuple[list[Verdict], dict[str, Any]]:
    """Build, measure and check the four models under ``overrides``; write the record to ``out``."""
    cfg = compose_config(overrides)
    eval_cfg = OmegaConf.merge(cfg.eval, {"suite": [f for f in FAMILIES if f in cfg.eval.suite]})
    check_suite(eval_cfg)
    set_seed(cfg.seed)
    prompter = Prompter()
    models, tokenizer, data = build_models(cfg, cache_dir(cfg.get("cache_dir")), prompter)
    measured, missing = measure(models, tokenizer, data, eval_cfg, prompter)
    verdicts = check(measured, missing)
    record = {
        "overrides": list(overrides),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "models": measured,
        "not_measured": missing,
        "checks": [asdict(v) for v in verdicts],
        "ok": all(v.ok is not False for v in verdicts),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2))
    return verdicts, record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sanity",
        description="Check that degenerate models rank as each metric's definition implies.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs") / "sanity" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json",
        help="where the JSON record goes",
    )
    args = parser.parse_args(argv)
    try:
        verdicts, record = run(args.overrides, args.out)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print(f"\n{metrics_table(record['models'])}\n\n{verdicts_table(verdicts)}")
    failed = [v for v in verdicts if v.ok is False]
    skipped = sum(v.ok is None for v in verdicts)
    print(
        f"\n{len(verdicts) - len(failed) - skipped} relations hold, {len(failed)} misranked, "
        f"{skipped} not applicable; record: {args.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
