"""The distillation baselines on the tiny random model: Prompt-distill (teacher = the frozen model
with the Prompt baseline's system prompt) and DI (teacher = the frozen model with the original
token's logit lowered). Each loss is 0 when its teacher equals the student, a few steps move the
student the way the paper says, and each runs a whole job."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import test_baselines
import torch
from test_baselines import DATA, build, context, forget_batch, lazy_reference

from baselines.di import imagined_teacher_logprobs
from benchmarks.evaluation.generation import generate
from benchmarks.job import run_job
from benchmarks.methods import METHODS
from benchmarks.prompting import Prompter
from benchmarks.training import collate, encode_example, mean_nll

#: test_baselines' fixtures: the tiny model and tokenizer; every reference the trainer builds.
tiny = test_baselines.tiny
built = test_baselines.built


def descend(model, loss: Callable[[], torch.Tensor], steps: int = 3, lr: float = 0.05) -> None:
    """Plain gradient steps on ``loss``."""
    for _ in range(steps):
        model.zero_grad()
        loss().backward()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter -= lr * parameter.grad


def prepared(make_cfg, model, tokenizer, tmp_path, *overrides: str):
    """A Prompt-distill method with its teacher built on the untrained model."""
    method = build(make_cfg, "prompt_distill", "method.max_new_tokens=6", *overrides)
    method.prepare(model, tokenizer, DATA, context(tmp_path))
    return method


def distill_batch(method, tokenizer, tmp_path) -> dict:
    """The method's forget examples for DATA, encoded and padded as the trainer does."""
    examples = method.forget_pairs(DATA, tokenizer, context(tmp_path))
    encoded = [encode_example(tokenizer, example, method.cfg.max_length) for example in examples]
    return collate(encoded, tokenizer.pad_token_id)


# -- DI ------------------------------------------------------------------------------------


def test_di_teacher_lowers_only_the_original_tokens_logit() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 7, generator=generator)
    labels = torch.tensor([[-100, 3, 5, -100]])  # positions 0 and 1 predict tokens 3 and 5

    plain, mask = imagined_teacher_logprobs(logits, labels, 0.0)
    lowered, _ = imagined_teacher_logprobs(logits, labels, 2.0)

    assert mask.tolist() == [[True, True, False]]
    torch.testing.assert_close(plain, torch.log_softmax(logits[0, :2], dim=-1))
    for row, token in enumerate((3, 5)):
        others = [t for t in range(7) if t != token]
        assert lowered[row, token] < plain[row, token]
        # Every other token keeps its odds against the others; the true one loses exactly 2 nats.
        shift = lowered[row, others] - plain[row, others]
        torch.testing.assert_close(shift, shift[:1].expand_as(shift))
        gap = (lowered[row, token] - lowered[row, others[0]]) - (
            plain[row, token] - plain[row, others[0]]
        )
        assert gap.item() == pytest.approx(-2.0, abs=1e-5)


def test_di_loss_is_zero_without_penalty_and_positive_with_it(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    reference = lazy_reference(model)
    batch = forget_batch(build(make_cfg, "di"), tokenizer, tmp_path)

    plain = build(make_cfg, "di", "method.strength=0").forget_loss(model, batch, reference)
    imagined = build(make_cfg, "di").forget_loss(model, batch, reference)

    assert plain.item() == pytest.approx(0.0, abs=1e-6)
    assert imagined.item() > 1e-3


def test_di_steps_lower_the_loss_and_the_true_tokens_probability(make_cfg, tiny, tmp_path) -> None:
    model, tokenizer = tiny
    method = build(make_cfg, "di")
    reference = lazy_reference(model)
    batch = forget_batch(method, tokenizer, tmp_path)
    with torch.no_grad():
        loss_before = method.forget_loss(model, batch, reference).item()
        nll_before = mean_nll(model, batch).item()

    descend(model, lambda: method.forget_loss(model, batch, reference))

    with torch.no_grad():
        assert method.forget_loss(model, batch, reference).item() < loss_before
        assert mean_nll(model, batch).item() > nll_before + 1e-4, "the true answer stays likely"


# -- Prompt-distill ------------------------------------------------------------------------


def test_prompt_distill_teacher_sees_the_system_prompt_and_the_student_does_not(
    make_cfg, tiny, tmp_path
) -> None:
    model, tokenizer = tiny
    method = prepared(make_cfg, model, tokenizer, tmp_path)
    ctx = context(tmp_path)

    examples = method.forget_pairs(DATA, tokenizer, ctx)

    system_prompt = method.teacher_prompter.system_prompt
    assert "Marie Curie" in system_prompt and "Alan Turing" in system_prompt
    assert len(examples) == len(DATA.forget)
    retain_questions = {record.question for record in DATA.retain}
    for example, record in zip(examples, DATA.forget, strict=True):
        assert set(example) == {"teacher", "student", "retain_teacher", "retain_student"}
        for prefix in ("", "retain_"):
            teacher, student = example[f"{prefix}teacher"], example[f"{prefix}student"]
            assert system_prompt in teacher.prompt and system_prompt not in student.prompt
            assert teacher.answer == student.answer
        assert example["student"].prompt == ctx.prompter(tokenizer, record.question)
        assert any(q in example["retain_student"].prompt for q in retain_questions)
    # The answers are the prompted teacher's own greedy answers, not the dataset's.
    teacher_prompts = [example["teacher"].prompt for example in examples]
    greedy = [g[0] for g in generate(model, tokenizer, teacher_prompts, max_new_tokens=6)]
    assert [example["teacher"].answer for example in examples] == greedy


def test_prompt_distill_can_use_the_true_answer_and_skip_retain_questions(
    make_cfg, tiny, tmp_path
) -> None:
    model, tokenizer = tiny
    method = prepared(
        make_cfg, model, tokenizer, tmp_path, "method.answer=true", "method.mix_retain=false"
    )

    examples = method.forget_pairs(DATA, tokenizer, context(tmp_path))

    assert method.answers == {}, "no generation is needed for the true answers"
    for example, record in zip(examples, DATA.forget, strict=True):
        assert set(example) == {"teacher", "student"}
        assert example["teacher"].answer == example["student"].answer == record.answer


@pytest.mark.parametrize("answer", ["teacher", "true"])
def test_prompt_distill_loss_is_zero_when_the_system_prompt_is_empty(
    make_cfg, tiny, tmp_path, answer
) -> None:
    model, tokenizer = tiny
    empty = prepared(make_cfg, model, tokenizer, tmp_path, "method.system_prompt=''",
                     f"method.answer={answer}")  # fmt: skip
    assert empty.teacher_prompter == Prompter(system_prompt="")
    batch = distill_batch(empty, tokenizer, tmp_path)
    reference = lazy_reference(model)

    assert empty.forget_loss(model, batch, reference).item() == pytest.approx(0.0, abs=1e-6)
    prompted = prepared(make_cfg, model, tokenizer, tmp_path, f"method.answer={answer}")
    prompted_batch = distill_batch(prompted, tokenizer, tmp_path)
    assert prompted.forget_loss(model, prompted_batch, reference).item() > 1e-5


def test_prompt_distill_steps_move_the_student_toward_the_prompted_teacher(
    make_cfg, tiny, tmp_path
) -> None:
    model, tokenizer = tiny
    method = prepared(make_cfg, model, tokenizer, tmp_path)
    batch = distill_batch(method, tokenizer, tmp_path)
    reference = lazy_reference(model)
    with torch.no_grad():
        before = method.forget_loss(model, batch, reference).item()
    teacher = reference().logits(batch["teacher"])  # the frozen prompted teacher: never moves

    descend(model, lambda: method.forget_loss(model, batch, reference))

    with torch.no_grad():
        assert method.forget_loss(model, batch, reference).item() < 0.9 * before
        torch.testing.assert_close(reference().logits(batch["teacher"]), teacher)


def test_prompt_distill_needs_its_teacher_before_the_pairs(make_cfg, tiny, tmp_path) -> None:
    _, tokenizer = tiny
    with pytest.raises(RuntimeError, match="prepare"):
        build(make_cfg, "prompt_distill").forget_pairs(DATA, tokenizer, context(tmp_path))


# -- both ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["prompt_distill", "di"])
def test_search_space_names_existing_method_keys(make_cfg, name) -> None:
    method_cfg = make_cfg(f"method={name}").method
    space = METHODS.get(name).search_space
    assert {"method.lr", "method.epochs"} <= set(space)
    for key in space:
        assert key.removeprefix("method.") in method_cfg


@pytest.mark.parametrize("name", ["prompt_distill", "di"])
def test_distill_baseline_runs_a_job_with_one_frozen_teacher(
    make_cfg, tmp_path, built, name
) -> None:
    own = ("method.max_new_tokens=4",) if name == "prompt_distill" else ()
    cfg = make_cfg(
        f"method={name}", "method.max_steps=1", "eval=quick", "eval.max_new_tokens=4", *own
    )

    results = run_job(cfg, tmp_path / name)

    assert results["status"] == "ok"
    assert results["metrics"]["unlearned"]["forget"]
    assert len(built) == 1, "the teacher is the one frozen original model"
