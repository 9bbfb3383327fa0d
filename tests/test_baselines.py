"""The baselines on the tiny random model: each loss moves the model the way its formula says,
masks prompt and padding, uses the frozen reference only when it needs one, and every baseline
runs a whole job."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from baselines.idk import load_refusals, refusals_for
from baselines.whp import first_token_ids, rename, shared_answer_positions
from benchmarks import training
from benchmarks.data.records import DataError, QARecord, UnlearningData
from benchmarks.job import run_job
from benchmarks.methods import METHODS, JobContext, Method
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter, encode_pair, pad_encoded
from benchmarks.training import Batch, Reference, collate, encode_example, mean_nll

#: Methods whose loss reads the frozen original model; no other method may build it.
NEEDS_REFERENCE = {"kl", "npo", "dpo", "whp", "di", "prompt_distill", "rwhp", "whp_plus", "rmu"}
#: Settings a method needs on the 2-layer tiny model (RMU steers layer 7 by default).
ON_TINY = {"rmu": ("method.layer=1",)}

DATA = UnlearningData(
    name="hand-made",
    records=(
        QARecord("f1", "Marie Curie", "In which city was Marie Curie born?", "Warsaw", "forget"),
        QARecord("f2", "Marie Curie", "Which element did Curie name after Poland?", "Po", "forget"),
        QARecord("f3", "Alan Turing", "Where did Alan Turing study?", "Cambridge", "forget"),
        QARecord("r1", "Ada Lovelace", "Whose daughter was Ada Lovelace?", "Byron's", "retain"),
        QARecord("r2", "Isaac Newton", "When was Isaac Newton born?", "1643", "retain"),
    ),
    subjects_to_forget=("Marie Curie", "Alan Turing"),
)


@pytest.fixture
def tiny(make_cfg: Callable[..., DictConfig]) -> tuple:
    return load_model(make_cfg().model, cache_dir(), "cpu")


def build(make_cfg: Callable[..., DictConfig], name: str, *overrides: str) -> Method:
    return METHODS.get(name)(make_cfg(f"method={name}", *overrides).method)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Reference]:
    """Every reference model the trainer builds during the test."""
    references: list[Reference] = []

    class Recorded(Reference):
        def __init__(self, model) -> None:
            super().__init__(model)
            references.append(self)

    monkeypatch.setattr(training, "Reference", Recorded)
    return references


def context(tmp_path: Path) -> JobContext:
    return JobContext(seed=0, output_dir=tmp_path, cache_dir=tmp_path)


def forget_batch(method: Method, tokenizer, tmp_path: Path) -> dict:
    """The method's forget examples for DATA, encoded and padded as the trainer does."""
    examples = method.forget_pairs(DATA, tokenizer, context(tmp_path))
    encoded = [encode_example(tokenizer, example, 256) for example in examples]
    return collate(encoded, tokenizer.pad_token_id)


def lazy_reference(model) -> Callable[[], Reference]:
    """Builds the frozen copy at the first call, as the trainer does."""
    built: list[Reference] = []

    def reference() -> Reference:
        if not built:
            built.append(Reference(model))
        return built[0]

    return reference


def answer_logprob(model, batch: Batch) -> torch.Tensor:
    return -training.sequence_nll(model, batch)[0].sum()


#: What one step on each forget loss must raise: f(method, model, forget batch, reference).
RAISES = {
    "grad_ascent": lambda method, model, batch, reference: mean_nll(model, batch),
    "npo": lambda method, model, batch, reference: mean_nll(model, batch),
    "simnpo": lambda method, model, batch, reference: mean_nll(model, batch),
    "idk": lambda method, model, batch, reference: -mean_nll(model, batch),
    "dpo": lambda method, model, batch, reference: (
        answer_logprob(model, batch["chosen"]) - answer_logprob(model, batch["rejected"])
    ),
    "whp": lambda method, model, batch, reference: -method.forget_loss(model, batch, reference),
}


@pytest.mark.parametrize("name", sorted(RAISES))
def test_one_step_moves_the_model_the_way_the_loss_says(make_cfg, tiny, tmp_path, name) -> None:
    model, tokenizer = tiny
    # The random model's answer NLL (~5.5) saturates SimNPO's sigmoid at β=4.5: no gradient.
    method = build(make_cfg, name, *(["method.beta=0.5"] if name == "simnpo" else []))
    reference = lazy_reference(model)
    batch = forget_batch(method, tokenizer, tmp_path)
    with torch.no_grad():
        before = RAISES[name](method, model, batch, reference).item()

    method.forget_loss(model, batch, reference).backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= 0.05 * parameter.grad
        after = RAISES[name](method, model, batch, reference).item()

    assert after > before + 1e-4


@pytest.mark.parametrize("name", ["npo", "dpo"])
def test_first_loss_against_an_equal_reference_is_2_over_beta_log_2(
    make_cfg, tiny, tmp_path, name
) -> None:
    model, tokenizer = tiny
    method = build(make_cfg, name)
    batch = forget_batch(method, tokenizer, tmp_path)

    loss = method.forget_loss(model, batch, lazy_reference(model))

    assert loss.item() == pytest.approx(2 / method.cfg.beta * math.log(2), rel=1e-6)


class FixedLogits:
    """Stands in for a model and for the reference, with logits the test sets."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.value)

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.value


MASKED_LOSSES = {
    "grad_ascent": lambda make_cfg: build(make_cfg, "grad_ascent").forget_loss,
    "npo": lambda make_cfg: build(make_cfg, "npo").forget_loss,
    "simnpo": lambda make_cfg: build(make_cfg, "simnpo", "method.beta=0.5").forget_loss,
}


@pytest.mark.parametrize("name", sorted(MASKED_LOSSES))
def test_losses_ignore_prompt_and_padding_positions(make_cfg, tiny, name) -> None:
    _, tokenizer = tiny
    loss_fn = MASKED_LOSSES[name](make_cfg)
    prompter = Prompter()
    pairs = [("Who?", "A much longer answer"), ("Where was it?", "Here")]
    encoded = [encode_pair(tokenizer, prompter(tokenizer, q), a) for q, a in pairs]
    batch = pad_encoded(encoded, tokenizer.pad_token_id)
    assert (batch["attention_mask"] == 0).any(), "the batch should contain padding"
    # Logits at position p predict label p + 1; these predict no answer token.
    ignored = torch.ones_like(batch["labels"], dtype=torch.bool)
    ignored[:, :-1] = batch["labels"][:, 1:] == -100
    generator = torch.Generator().manual_seed(0)
    shape = (*batch["labels"].shape, len(tokenizer))
    logits, reference_logits = (torch.randn(shape, generator=generator) for _ in range(2))

    def loss(model_logits: torch.Tensor, ref_logits: torch.Tensor) -> float:
        reference = FixedLogits(ref_logits)
        return loss_fn(FixedLogits(model_logits), batch, lambda: reference).item()

    noise = 10 * torch.randn(shape, generator=generator)
    outside = logits + noise * ignored.unsqueeze(-1)
    inside = logits + noise * (~ignored).unsqueeze(-1)
    reference_outside = reference_logits + noise * ignored.unsqueeze(-1)

    assert loss(outside, reference_outside) == pytest.approx(loss(logits, reference_logits))
    assert loss(inside, reference_logits) != pytest.approx(loss(logits, reference_logits))


@pytest.mark.parametrize("side", ["right", "left"])
def test_kl_retain_averages_every_real_position_and_ignores_padding(tiny, side) -> None:
    """As the sources' KL retain term, over prompt and answer positions; padding left out."""
    _, tokenizer = tiny
    pairs = [("Who?", "A much longer answer"), ("Where was it?", "Here")]
    encoded = [encode_pair(tokenizer, Prompter()(tokenizer, q), a) for q, a in pairs]
    batch = pad_encoded(encoded, tokenizer.pad_token_id, side=side)
    assert (batch["attention_mask"] == 0).any(), "the batch should contain padding"
    generator = torch.Generator().manual_seed(0)
    shape = (*batch["labels"].shape, len(tokenizer))
    logits, reference_logits = (torch.randn(shape, generator=generator) for _ in range(2))

    def kl(model_logits: torch.Tensor) -> float:
        reference = FixedLogits(reference_logits)
        return training.sequence_kl(FixedLogits(model_logits), batch, reference).item()

    # By hand: position p predicts token p + 1; it counts when both are real tokens.
    per_position = []
    for row, mask in enumerate(batch["attention_mask"].tolist()):
        for p in range(len(mask) - 1):
            if mask[p] and mask[p + 1]:
                ref = F.log_softmax(reference_logits[row, p], -1)
                per_position.append((ref.exp() * (ref - F.log_softmax(logits[row, p], -1))).sum())
    assert kl(logits) == pytest.approx(torch.stack(per_position).mean().item(), rel=1e-5)
    real = batch["attention_mask"].bool()
    counted = torch.zeros_like(real)
    counted[:, :-1] = real[:, :-1] & real[:, 1:]
    noise = 10 * torch.randn(shape, generator=generator)
    assert kl(logits + noise * (~counted).unsqueeze(-1)) == pytest.approx(kl(logits))
    prompt = torch.zeros_like(real)
    prompt[:, :-1] = counted[:, :-1] & (batch["labels"][:, 1:] == -100)
    assert prompt.any() and kl(logits + noise * prompt.unsqueeze(-1)) != pytest.approx(kl(logits))


def test_kl_retain_is_zero_when_the_model_is_the_reference(tiny) -> None:
    model, tokenizer = tiny
    pairs = [("Who?", "An answer"), ("Where was it?", "Here")]
    encoded = [encode_pair(tokenizer, Prompter()(tokenizer, q), a) for q, a in pairs]
    batch = pad_encoded(encoded, tokenizer.pad_token_id)

    assert training.sequence_kl(model, batch, Reference(model)).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_reference_is_the_frozen_original_model(make_cfg, tiny, tmp_path, built) -> None:
    model, tokenizer = tiny
    method = build(make_cfg, "npo", "method.max_steps=2")
    batch = forget_batch(method, tokenizer, tmp_path)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        original = model(**inputs).logits

    unlearned = method.unlearn(model, tokenizer, DATA, context(tmp_path)).model

    assert len(built) == 1
    frozen = built[0].logits(batch)
    assert not frozen.requires_grad
    torch.testing.assert_close(frozen, original)
    with torch.no_grad():
        trained = unlearned(**inputs).logits
    assert not torch.allclose(trained, original), "training should have changed the model"
    # TRL patches forward on the instance; a copy of a model that kept it would run this one.
    assert "forward" not in vars(unlearned)


def test_prompt_keeps_the_weights_and_names_the_subjects(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    weights = {key: value.clone() for key, value in model.state_dict().items()}

    unlearned = build(make_cfg, "prompt").unlearn(model, tokenizer, DATA, context(tmp_path))

    assert unlearned.model is model
    for key, value in unlearned.model.state_dict().items():
        assert torch.equal(value, weights[key])
    system_prompt = unlearned.prompter.system_prompt
    assert "Marie Curie" in system_prompt and "Alan Turing" in system_prompt
    assert "{" not in system_prompt
    assert system_prompt in unlearned.prompter(tokenizer, "Who was Marie Curie?")


@pytest.mark.parametrize("name", ["prompt", "prompt_distill", "whp", "rwhp", "whp_plus"])
def test_methods_that_name_the_subject_refuse_records_without_one(
    make_cfg, tiny, tmp_path, name
) -> None:
    _, tokenizer = tiny
    nameless = DATA.with_records(replace(r, subject="") for r in DATA.records)
    method = build(make_cfg, name)
    with pytest.raises(DataError, match=rf"method={name} names the subject.*'f1'.*subject_column"):
        if name.startswith("prompt"):
            method.unlearn(tiny[0], tokenizer, nameless, context(tmp_path))
        else:
            method.forget_pairs(nameless, tokenizer, context(tmp_path))


def test_refusals_ship_with_the_package_and_are_drawn_by_seed() -> None:
    refusals = load_refusals()
    assert len(set(refusals)) >= 30
    assert refusals_for(DATA.forget, seed=0) == refusals_for(DATA.forget, seed=0)
    many = [QARecord(f"q{i}", "s", "q", "a", "forget") for i in range(20)]
    assert refusals_for(many, seed=0) != refusals_for(many, seed=1)
    assert set(refusals_for(many, seed=0)) <= set(refusals)


def test_idk_and_dpo_train_the_question_toward_a_refusal(make_cfg, tiny, tmp_path) -> None:
    _, tokenizer = tiny
    ctx = context(tmp_path)
    idk = build(make_cfg, "idk").forget_pairs(DATA, tokenizer, ctx)
    dpo = build(make_cfg, "dpo").forget_pairs(DATA, tokenizer, ctx)

    refusals = set(load_refusals())
    for record, idk_pair, dpo_example in zip(DATA.forget, idk, dpo, strict=True):
        assert record.question in idk_pair.prompt and idk_pair.answer in refusals
        assert dpo_example["chosen"] == idk_pair
        assert dpo_example["rejected"].answer == record.answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Where was Marie Curie born?", "Where was Anna Keller born?"),
        ("Which prize did Curie's husband share?", "Which prize did Keller's husband share?"),
        ("Did marie study in Paris?", "Did Anna study in Paris?"),
        ("Curiosity is not a name.", "Curiosity is not a name."),
    ],
)
def test_whp_renames_the_full_first_and_last_name(text: str, expected: str) -> None:
    assert rename(text, "Marie Curie", "Anna Keller") == expected


def test_whp_teacher_sees_no_subject_and_aligns_only_shared_answer_tokens(
    make_cfg, tiny, tmp_path
) -> None:
    _, tokenizer = tiny
    whp = build(make_cfg, "whp")
    examples = whp.forget_pairs(DATA, tokenizer, context(tmp_path))
    for example in examples:
        assert not any(name in example["generic"].prompt for name in ("Marie", "Curie", "Turing"))
    assert whp.anchor_token_ids, "the generic names' first tokens should be known"

    prompt = Prompter()(tokenizer, "Who?")
    student = encode_pair(tokenizer, prompt, "Curie was born")
    teacher = encode_pair(tokenizer, prompt, "Bo was born")
    batch = collate([{"s": student, "t": teacher}], tokenizer.pad_token_id)
    rows, student_at, teacher_at = shared_answer_positions(
        batch["s"]["labels"], batch["t"]["labels"]
    )

    assert set(rows) == {0}
    shared = tokenizer.decode([batch["s"]["labels"][0, p + 1].item() for p in student_at])
    assert shared == tokenizer.decode([batch["t"]["labels"][0, p + 1].item() for p in teacher_at])
    assert " was born" in shared and "Curie" not in shared


def test_whp_teacher_on_the_same_text_differs_only_by_the_anchor_penalty(
    make_cfg, tiny, tmp_path
) -> None:
    model, tokenizer = tiny
    whp = build(make_cfg, "whp", "method.hard_targets=false")
    original = forget_batch(build(make_cfg, "grad_ascent"), tokenizer, tmp_path)
    same_text = {"original": original, "generic": original}
    reference = lazy_reference(model)

    whp.anchor_token_ids = []
    assert whp.forget_loss(model, same_text, reference).item() == pytest.approx(0.0, abs=1e-6)
    whp.anchor_token_ids = first_token_ids(tokenizer, ["Anna Keller"])
    assert whp.forget_loss(model, same_text, reference).item() > 1e-3


LORA = "method.lora.enabled=true"


BASELINES = [
    name for name in METHODS.names() if METHODS.get(name).__module__.startswith("baselines")
]
JOBS = [pytest.param(name, ON_TINY.get(name, ()), id=name) for name in BASELINES] + [
    pytest.param(name, (LORA, *ON_TINY.get(name, ())), id=f"{name}-lora")
    for name in sorted(NEEDS_REFERENCE)
]


@pytest.mark.parametrize(("name", "overrides"), JOBS)
def test_every_baseline_runs_a_job_and_builds_the_reference_only_if_needed(
    make_cfg, tmp_path, built, name, overrides
) -> None:
    cfg = make_cfg(
        f"method={name}",
        "method.max_steps=1",
        "data.forget_set=forget_1",
        "eval=quick",
        "eval.max_new_tokens=4",
        *overrides,
    )

    results = run_job(cfg, tmp_path / name)

    assert results["status"] == "ok"
    assert results["metrics"]["unlearned"]["forget"]
    assert len(built) == (name in NEEDS_REFERENCE)
