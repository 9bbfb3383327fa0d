"""Typed configs: the schema of every config group, and validation at the door.

Each YAML file in ``conf/`` is typed by a dataclass here (or beside its method: ``NPOConfig`` in
``baselines/npo.py``), stored in Hydra's ConfigStore under a hidden name, so Hydra rejects a wrong
type while composing. Ranges and choices are declared per field with :func:`knob` and checked by
one function, :func:`validate`, which also rejects keys a schema does not have (``+method.lrr=1``)
and keys that look like credentials (they belong in the environment). :class:`ValidateOnStart`
runs it as a Hydra callback, before Hydra writes anything to the job's directory.

The trainer's arguments are TRL's :class:`~trl.SFTConfig`, built from :class:`TrainConfig` by
:func:`benchmarks.training.trainer_args`: OmegaConf cannot type TRL's dataclasses directly
(``TrainingArguments`` has fields typed as unions of containers), so the YAML-facing schema is
this small one with short names, mapped onto TRL's fields in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

#: A credential word ending a key (``hf_token``, ``OPENAI_API_KEY``), not inside one
#: (``max_new_tokens``, ``api_key_env`` are settings).
SECRET_KEY = re.compile(
    r"(^|[\W_])(api_?key|access_?key|secret_?key|token|secret|password|passwd)$", re.IGNORECASE
)


class ConfigError(ValueError):
    """A config value is out of range, unknown or secret; the message names the key and the fix."""


def knob(
    default: Any = MISSING,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[str] | None = None,
    default_factory: Any = None,
) -> Any:
    """A config field with its help text and allowed values (checked by :func:`validate`)."""
    metadata = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- schemas ---------------------------------------------------------------------------------


@dataclass
class LoraSpec:
    """LoRA adapters (peft), merged into the weights after training."""

    enabled: bool = knob(False, "train LoRA adapters instead of every weight")
    r: int = knob(16, "adapter rank", ge=1)
    alpha: float = knob(32.0, "LoRA scaling alpha", gt=0)
    dropout: float = knob(0.0, "dropout on the adapter input", ge=0, lt=1)
    target_modules: str = knob("all-linear", "modules that get adapters (peft's names)")


@dataclass
class TrainConfig:
    """What the shared trainer needs: optimisation, and the forget/retain loss combination."""

    lr: float = knob(1e-5, "peak learning rate (AdamW)", gt=0)
    epochs: int = knob(5, "passes over the forget examples (max_steps overrides)", ge=1)
    batch_size: int = knob(4, "forget examples per step (each paired with a retain one)", ge=1)
    grad_accum: int = knob(1, "gradient accumulation steps", ge=1)
    max_steps: int | None = knob(None, "stop after this many optimiser steps (null: epochs)", ge=1)
    scheduler: str = knob(
        "linear", "learning-rate schedule", choices=("linear", "constant", "cosine")
    )
    warmup: float = knob(0.0, "warm-up steps (an int) or share of steps (< 1)", ge=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = knob(1.0, "gradient clipping norm", gt=0)
    max_length: int = knob(256, "tokens per (prompt, answer); the answer's end is cut", ge=8)
    logging_steps: int = knob(5, "log the loss terms every N steps", ge=1)
    gamma: float = knob(1.0, "weight of the forget term", ge=0)
    alpha: float = knob(0.0, "weight of the retain term (0: no retain batches)", ge=0)
    retain_loss: str = knob("none", "the retain term", choices=("nll", "kl", "none"))
    lora: LoraSpec = knob(help="LoRA or full fine-tuning", default_factory=LoraSpec)


@dataclass
class MethodConfig(TrainConfig):
    """A method's config: its registered name and the trainer's knobs (training-free methods
    keep them so that a sweep setting a training key composes for every method)."""

    name: str = knob(MISSING, "the registered method name")
    # The one early-stopping rule of every training method (benchmarks/evaluation/selection.py):
    # the training budget (epochs or max_steps) is its cap.
    stop_when_forgotten: bool = knob(
        False, "stop training once no forget question (or selection paraphrase) leaks"
    )
    stop_check_every: int = knob(5, "optimizer steps between two checks of the stopping rule", ge=1)


@dataclass
class GateConfig:
    """target=finetune's knowledge gate (benchmarks/target.py): train until the target knows the
    taught facts, up to a cap, and say which it does not."""

    enabled: bool = knob(True, "measure and gate the target (false: the recipe alone, unmeasured)")
    min_known_share: float = knob(
        0.9, "share of each taught split the target must know: stop there; below it at the cap: "
        "on_fail", ge=0, le=1,
    )  # fmt: skip
    max_extra_epochs: int = knob(7, "epochs the gate may add after the recipe's: the cap", ge=0)
    check_every: int | None = knob(
        None, "optimizer steps between checks in the extra epochs (null: each epoch)", ge=1
    )
    on_fail: str = knob("warn", "below min_known_share at the cap: stop the job, or go on loudly",
                        choices=("error", "warn"))  # fmt: skip
    known_only: bool = knob(
        True, "the task keeps the facts the target knows (false: all, unknown ones counted)"
    )


@dataclass
class TargetConfig:
    """The model to unlearn from (benchmarks/target.py)."""

    kind: str = knob("finetune", "teach the facts first, or unlearn what the base model knows",
                     choices=("finetune", "base"))  # fmt: skip
    seed: int = knob(0, "the target fine-tune's seed (a seed sweep shares one target)", ge=0)
    train_paraphrases: bool = knob(True, "also teach the dataset's paraphrases")
    train: TrainConfig = knob(help="the target fine-tune", default_factory=TrainConfig)
    gate: GateConfig = knob(help="target=finetune: the knowledge gate", default_factory=GateConfig)


@dataclass
class LeakConfig:
    """The leak test (benchmarks/evaluation/leak.py)."""

    fuzzy_threshold: float = knob(80.0, "rapidfuzz ratio above which words match", ge=0, le=100)
    embedding_threshold: float = knob(0.8, "MiniLM cosine above which a text leaks", ge=-1, le=1)
    use_embedding: bool = knob(True, "use the sentence embedder for undecided texts")


@dataclass
class RefusalConfig:
    threshold: float = knob(0.5, "MiniLM cosine to a refusal phrasing above which", ge=-1, le=1)
    use_embedding: bool = knob(True, "use the sentence embedder")


@dataclass
class JudgeConfig:
    """Who scores privacy, refusals and response quality (benchmarks/evaluation/judges.py)."""

    kind: str = knob("local", "local (offline) or openai (any chat-completions API)")
    refusal: RefusalConfig = knob(help="local refusal detection", default_factory=RefusalConfig)
    fluency_anchors: str | None = knob(
        None, "local: a 'question | answer' file fixing the fluency scale (null: shipped English)"
    )
    url: str | None = knob(None, "openai: the API base, e.g. https://api.openai.com/v1")
    model: str = knob("gpt-4o", "openai: the judge model")
    api_key_env: str = knob("OPENAI_API_KEY", "openai: the environment variable with the key")
    timeout_s: float = knob(60.0, "openai: seconds per request", gt=0)
    retries: int = knob(2, "openai: retries on time-outs, 429 and 5xx", ge=0)


@dataclass
class PrivacyConfig:
    k: float = knob(0.4, "min-k% and min-k%++: share of lowest-scoring tokens", gt=0, le=1)


@dataclass
class TofuConfig:
    utility_views: list[str] = knob(
        help="model utility's kept views on data without TOFU's real authors and world facts",
        default_factory=list,
    )


@dataclass
class EvalConfig:
    """One generation and one scoring pass per model, then the suite (benchmarks/evaluation/)."""

    views: list[str] = knob(help="what is evaluated", default_factory=list)
    metrics: list[str] = knob(help="per-question metrics", default_factory=list)
    max_new_tokens: int = knob(32, "greedy answer length (default: data.max_new_tokens)", ge=1)
    batch_size: int = knob(16, "prompts per generation and scoring batch", ge=1)
    leak: LeakConfig = knob(help="the leak test", default_factory=LeakConfig)
    suite: list[str] = knob(help="suite families (attacks, privacy, ...)", default_factory=list)
    judge: JudgeConfig = knob(help="the judge", default_factory=JudgeConfig)
    attacks: dict[str, Any] = knob(help="attack name: its options", default_factory=dict)
    privacy: PrivacyConfig = knob(help="membership inference", default_factory=PrivacyConfig)
    tofu: TofuConfig = knob(help="TOFU metrics", default_factory=TofuConfig)


@dataclass
class ModelConfig:
    """The base model (benchmarks/models.py)."""

    source: str = knob(MISSING, "where it comes from", choices=("embedded", "hub", "tiny_random"))
    name_or_path: str = knob(MISSING, "hub name or local directory")
    dtype: str = knob("float32", "weights' dtype", choices=("float32", "bfloat16", "float16"))


@dataclass
class TinyModelConfig(ModelConfig):
    """A tiny random Llama built from this config, for fast tests."""

    hidden_size: int = knob(32, "hidden width", ge=1)
    num_layers: int = knob(2, "decoder layers", ge=1)
    num_heads: int = knob(2, "attention heads", ge=1)
    seed: int = knob(0, "weight initialisation seed", ge=0)


@dataclass
class DataConfig:
    """A dataset (benchmarks/data/): its loader's name and the knowledge filter."""

    name: str = knob(MISSING, "the registered loader")
    only_known: bool = knob(False, "target=base: keep only questions the base model answers")
    max_new_tokens: int = knob(
        32, "answer length the dataset's protocol allows (eval.max_new_tokens follows it)", ge=1
    )


@dataclass
class WpuMiniConfig(DataConfig):
    forget_set: str = knob("forget_2", "forget_1 | forget_2 | forget_5 | forget_<k> | forget_facts")
    facts_persons: int = knob(2, "forget_facts: persons who lose some facts", ge=1)
    facts_per_person: int = knob(2, "forget_facts: facts each of them loses", ge=1)
    n_retain: int | None = knob(
        16, "facts of other persons that train retain terms (null: all)", ge=0
    )
    n_general_retain: int | None = knob(16, "general-retain questions evaluated (null: all)", ge=0)
    n_holdout: int = knob(10, "facts never trained on: the MIA non-members", ge=0)


@dataclass
class HubDataConfig(DataConfig):
    """WPU or TOFU from the hub, or from a local copy of the repository."""

    repo: str = knob(MISSING, "hub id, or a directory holding the downloaded repository")
    forget_set: str = knob(MISSING, "the dataset's forget set")
    n_retain: int | None = knob(16, "retain facts that train retain terms (null: all)", ge=0)
    n_general_retain: int | None = knob(
        16, "questions evaluated per kept set (WPU: general retain; TOFU: each of its three)", ge=0
    )


@dataclass
class WpuHubConfig(HubDataConfig):
    n_holdout: int = knob(20, "facts of persons never trained on: the MIA non-members", ge=0)


@dataclass
class GeneratedParaphrasesConfig:
    """Held-out paraphrases for data that has none (benchmarks/heldout.py): the base model writes
    them with UnSTAR's paraphrase prompt and filters, from a seed of their own."""

    enabled: bool = knob(True, "write paraphrases of the forget questions that have none")
    n_candidates: int = knob(12, "candidates sampled per question", ge=1)
    keep: int = knob(4, "paraphrases kept per question (split into dev and test halves)", ge=1)
    seed: int = knob(1234, "sampling seed; must differ from the job seed", ge=0)
    temperature: float = knob(1.0, "sampling temperature", gt=0)
    min_similarity: float = knob(0.7, "cosine to the question, subject masked", ge=-1, le=1)
    batch_size: int = knob(16, "prompts per generation batch", ge=1)
    leak: LeakConfig = knob(help="rejects paraphrases that state the answer",
                            default_factory=LeakConfig)  # fmt: skip


@dataclass
class WpuRealConfig(DataConfig):
    """WPU-style tasks from the real WPU questions (benchmarks/data/wpu_real.py)."""

    path: str = knob(MISSING, "the question,answer,is_correct file (relative: to the project root)")
    world_facts: str | None = knob(None, "TOFU world facts JSONL: general retain (null: none)")
    forget_set: str = knob("forget_2_1", "forget_<n>_<k>: the k-th run of n persons in file order")
    n_holdout_persons: int = knob(10, "the file's last persons, never trained on (MIA)", ge=0)
    n_retain: int | None = knob(16, "questions of kept persons that train retain terms", ge=0)
    n_general_retain: int | None = knob(16, "world facts evaluated as general retain", ge=0)
    answer_sharing_per_fact: int = knob(
        2, "per forget question, kept questions (and world facts) sharing its answer", ge=0
    )
    hard_retain_per_fact: int = knob(1, "per forget question, same-relation questions", ge=0)
    hard_retain_min_similarity: float = knob(
        0.5, "word overlap (Jaccard, person masked) a same-relation question needs", ge=0, le=1
    )
    generate_paraphrases: GeneratedParaphrasesConfig = knob(
        help="held-out paraphrases written by the base model",
        default_factory=GeneratedParaphrasesConfig,
    )


@dataclass
class QAFileConfig(DataConfig):
    """Any CSV / JSONL / JSON list of question-answer rows."""

    path: str = knob(MISSING, "the file")
    encoding: str = knob("utf-8", "the file's text encoding")
    question_column: str = knob("question", "column of the questions")
    answer_column: str = knob("answer", "column of the answers")
    subject_column: str = knob("subject", "column of the subjects")
    default_role: str = knob("forget", "role of rows without a role column")
    limit: int | None = knob(None, "keep only the first N records", ge=1)


#: Each YAML option's schema; the YAML names it in its defaults list.
GROUP_SCHEMAS: dict[tuple[str, str], type] = {
    ("model", "smollm2_135m"): ModelConfig,
    ("model", "hub"): ModelConfig,
    ("model", "tiny_random"): TinyModelConfig,
    ("data", "wpu_mini"): WpuMiniConfig,
    ("data", "wpu"): WpuHubConfig,
    ("data", "tofu"): HubDataConfig,
    ("data", "qa_file"): QAFileConfig,
    ("data", "wpu_real"): WpuRealConfig,
}


@dataclass
class JobConfig:
    """The top level of ``conf/config.yaml``."""

    seed: int = knob(0, "fixes data order, sampling and generation of the method", ge=0)
    device: str = knob("auto", "auto | cpu | cuda | cuda:N")
    threads: int | None = knob(
        None, "torch CPU threads; null: every core this process may use", ge=1
    )
    cache_dir: str | None = knob(None, "where converted models, targets and anti-samples live")
    force: bool = knob(False, "re-run a job whose identical config already finished")
    save_model: bool = knob(False, "keep the unlearned model in the job dir (model/)")
    tuned_dir: str = knob("outputs/tuned", "where tune=<method> writes <method>.yaml")
    use_tuned: bool = knob(False, "run the method at its parameters in tuned_dir/<method>.yaml")
    model: Any = MISSING
    data: Any = MISSING
    target: TargetConfig = knob(help="the model to unlearn from", default_factory=TargetConfig)
    method: MethodConfig = MISSING
    eval: EvalConfig = knob(help="evaluation", default_factory=EvalConfig)
    tracking: Any = MISSING


def schema_name(group: str, option: str) -> str:
    """The hidden ConfigStore name a YAML file of ``group`` names in its defaults list (hidden:
    a ConfigStore group would be listed among the choices in ``--help``)."""
    return f"{group}_{option}_schema"


def register_schemas(method_configs: dict[str, type[MethodConfig]]) -> None:
    """Store the schemas in Hydra's ConfigStore; YAML files name them in their defaults list."""
    store = ConfigStore.instance()
    store.store(name="job_schema", node=JobConfig)
    for (group, option), schema in GROUP_SCHEMAS.items():
        store.store(name=schema_name(group, option), node=schema)
    for option, config in method_configs.items():
        store.store(name=schema_name("method", option), node=config)


# -- validation ------------------------------------------------------------------------------


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first unknown, secret or out-of-range key."""
    for key in _all_keys(cfg):
        _refuse_secret(key)
    _check_node(cfg, "")


def _refuse_secret(key: str) -> None:
    if SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        raise ConfigError(
            f"{key}: configs never hold credentials (they are written to .hydra/ and W&B). "
            "Put the secret in an environment variable (e.g. OPENAI_API_KEY, WANDB_API_KEY) "
            "and name that variable where the config asks for one (eval.judge.api_key_env)."
        )


def _all_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if OmegaConf.is_config(node) and (node._is_none() or node._is_missing()):
        return
    if isinstance(node, DictConfig):
        for key in node:
            name = f"{prefix}{key}"
            yield name
            yield from _all_keys(node._get_node(key), f"{name}.")
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node._iter_ex(resolve=False)):
            yield from _all_keys(item, f"{prefix}{index}.")


def _check_node(node: DictConfig, prefix: str) -> None:
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):  # an untyped node: check the typed ones inside
        for key in node:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and key != "hydra":
                _check_node(child, f"{prefix}{key}.")
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else "."
            raise ConfigError(
                f"{prefix}{key} is not a setting of {schema.__name__}{hint} "
                f"Its settings: {', '.join(sorted(fields))}."
            )
    for name, spec in fields.items():
        if OmegaConf.is_missing(node, name):
            continue
        value = node[name]
        if isinstance(value, DictConfig):
            _check_node(value, f"{prefix}{name}.")
        elif isinstance(value, ListConfig):
            for index, item in enumerate(value):
                _check_value(f"{prefix}{name}[{index}]", item, spec.metadata)
        elif value is not None:
            _check_value(f"{prefix}{name}", value, spec.metadata)


def _check_value(key: str, value: Any, rules: Any) -> None:
    choices = rules.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(choices)}")
    bounds = [
        ("ge", lambda v, b: v >= b, "≥"),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "≤"),
        ("lt", lambda v, b: v < b, "<"),
    ]
    allowed = [f"{sign} {rules[name]}" for name, _, sign in bounds if rules.get(name) is not None]
    for name, holds, _ in bounds:
        bound = rules.get(name)
        if bound is not None and not holds(value, bound):
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be {' and '.join(allowed)}"
                + (f" ({rules['help']})" if rules.get("help") else "")
            )


def refuse_secret_overrides(arguments: list[str]) -> None:
    """Refuse ``key=value`` command-line overrides whose key looks like a credential, before Hydra
    writes them to ``.hydra/`` (Hydra callbacks cannot stop a run: it turns their errors into
    warnings)."""
    for argument in arguments:
        if "=" in argument and not argument.startswith("-"):
            _refuse_secret(argument.split("=", 1)[0].lstrip("+~"))
