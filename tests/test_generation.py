"""Generation, answer scoring and ``evaluate_model`` on the tiny random model (seconds on a CPU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import scaled_tiny_model
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.evaluation.evaluate import METRICS, evaluate_model
from benchmarks.evaluation.generation import answer_logprobs, generate
from benchmarks.evaluation.specs import METRICS as METRICS_REGISTRY
from benchmarks.evaluation.specs import RowInputs, metric
from benchmarks.models import tiny_tokenizer
from benchmarks.prompting import (
    TRUNCATED,
    Prompter,
    PromptTooLongError,
    encode_pair,
    encode_pairs,
    pad_encoded,
)
from benchmarks.training import collate

Model = tuple[PreTrainedModel, PreTrainedTokenizerBase]
QUESTIONS = [
    "Where was Albert Einstein born, and in which year?",
    "Hi?",
    "Who wrote Hamlet?",
    "What is the capital of France and its largest city by population?",
]


@pytest.fixture
def model(make_cfg: Callable[..., DictConfig]) -> Model:
    """The tiny model, scaled so that its output depends on the whole context."""
    return scaled_tiny_model(make_cfg())


@pytest.fixture
def prompts(model: Model) -> list[str]:
    return [Prompter()(model[1], q) for q in QUESTIONS]


def test_batched_greedy_generation_equals_one_at_a_time(model: Model, prompts: list[str]) -> None:
    batched = generate(*model, prompts, max_new_tokens=8, batch_size=3)
    plain = generate(*model, prompts, max_new_tokens=8, batch_size=3, share_prefix=False)
    single = [generate(*model, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == plain == single
    assert all(texts[0] for texts in batched) and len({t[0] for t in batched}) == len(prompts)

    # Control: right padding does change the plain batches' output, so the comparison above can
    # see padding (the shared-prefix batches lay out their own padding, on the left).
    model[1].padding_side = "right"
    assert generate(*model, prompts, max_new_tokens=8, batch_size=4, share_prefix=False) != single
    assert generate(*model, prompts, max_new_tokens=8, batch_size=4) == single


def test_answer_logprobs_batched_equal_one_at_a_time_and_cover_only_the_answer(
    model: Model, prompts: list[str]
) -> None:
    lm, tokenizer = model
    answers = ["Ulm, 1879", "Hello", "William Shakespeare", "Paris"]
    batched = answer_logprobs(lm, tokenizer, prompts, answers, batch_size=3)
    for prompt, answer, scores in zip(prompts, answers, batched, strict=True):
        [single] = answer_logprobs(lm, tokenizer, [prompt], [answer], batch_size=1)
        np.testing.assert_allclose(scores, single, atol=1e-5)
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert len(scores) == len(answer_ids) + 1  # the answer and its end-of-turn token

    # By hand for one pair: log-probs of the answer tokens and eos, each given what precedes it.
    prompt_ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids + [tokenizer.eos_token_id]])
    with torch.no_grad():
        logprobs = F.log_softmax(lm(input_ids=ids).logits[0, :-1], dim=-1)
    targets = ids[0, len(prompt_ids) :]
    expected = logprobs[len(prompt_ids) - 1 :].gather(-1, targets[:, None]).squeeze(-1)
    np.testing.assert_allclose(batched[0], expected.numpy(), atol=1e-5)


def test_sampling_is_fixed_by_the_seed(model: Model, prompts: list[str]) -> None:
    def sample(seed: int) -> list[list[str]]:
        return generate(
            *model, prompts[:2], max_new_tokens=6, temperature=1.0, num_samples=2, seed=seed
        )

    torch.manual_seed(123)
    first = sample(1)
    assert all(len(texts) == 2 for texts in first)
    assert sample(1) == first
    assert sample(2) != first
    # The global generator is left as it was: sampling does not shift later randomness.
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)


def _record(id: str, role: str, paraphrases: int = 0, perturbed: int = 2) -> QARecord:
    return QARecord(
        id=id,
        subject="Ada Lovelace",
        question=f"Question {id}?",
        answer=f"Answer {id}",
        role=role,
        paraphrases=tuple(f"Paraphrase {i} of {id}?" for i in range(paraphrases)),
        perturbed_answers=tuple(f"Wrong {i} {id}" for i in range(perturbed)),
    )


def test_evaluate_model_rows_and_view_means(
    model: Model, make_cfg: Callable[..., DictConfig]
) -> None:
    data = UnlearningData(
        "tiny",
        (
            _record("f1", "forget", paraphrases=2),
            _record("f2", "forget", paraphrases=1),
            _record("r1", "retain"),
            _record("h1", "hard_retain"),
            _record("g1", "general_retain", perturbed=0),
        ),
    )
    # The whole views (their dev/test halves: tests/test_split.py).
    views = (
        "eval.views=[forget,forget_paraphrased,hard_retain,general_retain,forget_facts_retained]"
    )
    summary, rows = evaluate_model(*model, data, make_cfg(views).eval, Prompter(), "tiny")

    # forget_facts_retained has no records and retain is not evaluated: neither appears.
    assert set(summary) == {"forget", "forget_paraphrased", "hard_retain", "general_retain"}
    for view in ("forget", "forget_paraphrased", "hard_retain"):
        assert set(summary[view]) == {"n", *METRICS}
    # Without perturbed answers there is no truth ratio.
    assert set(summary["general_retain"]) == {"n", *METRICS} - {"truth_preference"}
    # n: the questions asked in the view (each paraphrase is one), not the records.
    n = {view: values.pop("n") for view, values in summary.items()}
    assert n == {"forget": 2, "forget_paraphrased": 3, "hard_retain": 1, "general_retain": 1}
    for values in summary.values():
        assert all(0.0 <= v <= 1.0 for v in values.values())

    asked = [(r["view"], r["id"], r["question"]) for r in rows]
    assert asked == [
        ("forget", "f1", "Question f1?"),
        ("forget", "f2", "Question f2?"),
        ("forget_paraphrased", "f1", "Paraphrase 0 of f1?"),
        ("forget_paraphrased", "f1", "Paraphrase 1 of f1?"),
        ("forget_paraphrased", "f2", "Paraphrase 0 of f2?"),
        ("hard_retain", "h1", "Question h1?"),
        ("general_retain", "g1", "Question g1?"),
    ]
    assert all(r["model"] == "tiny" and "generation" in r for r in rows)


def test_a_metric_registered_as_a_decorated_function_appears_in_rows_and_view_means(
    model: Model, make_cfg: Callable[..., DictConfig]
) -> None:
    @metric("answer_words", needs={"generation"}, higher_is_better=None)
    def answer_words(row: RowInputs) -> float:
        return float(len((row.generation or "").split()) + len(row.answer.split()))

    try:
        data = UnlearningData("tiny", (_record("f1", "forget"), _record("h1", "hard_retain")))
        cfg = make_cfg("eval.metrics=[answer_words]", "eval.views=[forget,hard_retain]").eval
        summary, rows = evaluate_model(*model, data, cfg, Prompter(), "tiny")
    finally:
        METRICS_REGISTRY.unregister("answer_words")
    for r in rows:
        assert r["answer_words"] == len(r["generation"].split()) + 2
        assert "rougeL_recall" not in r and "answer_prob" not in r  # only what was selected
    assert summary == {
        view: {"n": 1, "answer_words": next(r["answer_words"] for r in rows if r["view"] == view)}
        for view in ("forget", "hard_retain")
    }


def test_evaluate_model_rejects_an_unknown_metric(
    model: Model, make_cfg: Callable[..., DictConfig]
) -> None:
    data = UnlearningData("tiny", (_record("f1", "forget"),))
    eval_cfg = make_cfg("eval.metrics=[rougeL_recall,bleu]").eval
    with pytest.raises(ValueError, match="bleu"):
        evaluate_model(*model, data, eval_cfg, Prompter(), "tiny")
    old_name = make_cfg("eval.metrics=[truth_ratio]").eval
    with pytest.raises(ValueError, match="truth_ratio is now truth_preference"):
        evaluate_model(*model, data, old_name, Prompter(), "tiny")


def test_the_truth_ratio_compares_the_wrong_answers_with_the_paraphrased_one(
    model: Model, make_cfg: Callable[..., DictConfig]
) -> None:
    plain = _record("f1", "forget", perturbed=3)
    reworded = replace(plain, id="f2", paraphrased_answer="In other words, answer f1")
    data = UnlearningData("tiny", (plain, reworded))
    eval_cfg = make_cfg("eval.views=[forget]", "eval.metrics=[answer_prob,truth_preference]").eval
    _, rows = evaluate_model(*model, data, eval_cfg, Prompter(), "tiny")

    prompt = Prompter()(model[1], plain.question)
    answers = [plain.answer, "In other words, answer f1", *plain.perturbed_answers]
    answer, paraphrased, *wrong = answer_logprobs(*model, [prompt] * len(answers), answers)
    perturbed = np.mean([lp.mean() for lp in wrong])
    by_hand = {
        "f1": np.exp(perturbed - answer.mean()),
        "f2": np.exp(perturbed - paraphrased.mean()),
    }
    assert by_hand["f1"] != pytest.approx(by_hand["f2"])
    for row in rows:
        assert row["truth_ratio_R"] == pytest.approx(by_hand[row["id"]], rel=1e-5)
        assert row["answer_prob"] == pytest.approx(np.exp(answer.mean()), rel=1e-5)
        assert row["truth_preference"] == pytest.approx(max(0.0, 1 - by_hand[row["id"]]), abs=1e-6)
    probs = np.exp([answer.mean(), *(lp.mean() for lp in wrong)])
    assert rows[0]["answer_prob_normalised"] == pytest.approx(probs[0] / probs.sum(), rel=1e-5)


def test_long_answer_loses_its_end_never_the_prompt() -> None:
    tokenizer = tiny_tokenizer()
    prompt = Prompter()(tokenizer, "Where was Albert Einstein born?")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = "Ulm, in the Kingdom of Wurttemberg. " * 300
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]

    encoded = encode_pair(tokenizer, prompt, answer, max_length=64)

    n_prompt = len(prompt_ids)
    assert encoded["truncated"] and len(encoded["input_ids"]) == 64
    assert encoded["input_ids"][:n_prompt] == prompt_ids
    assert encoded["labels"] == [-100] * n_prompt + answer_ids[: 64 - n_prompt]
    short = encode_pair(tokenizer, prompt, "Ulm", max_length=64)
    assert not short["truncated"]
    assert short["labels"][-1] == tokenizer.eos_token_id


def test_prompt_longer_than_max_length_is_an_error() -> None:
    tokenizer = tiny_tokenizer()
    with pytest.raises(PromptTooLongError, match=r"max_length=16"):
        encode_pair(tokenizer, "A question far longer than sixteen bytes?", "A", max_length=16)


def test_truncations_are_counted_per_site_and_batches_ignore_the_flag(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokenizer = tiny_tokenizer()
    TRUNCATED.clear()
    with caplog.at_level("WARNING", logger="benchmarks.prompting"):
        encoded = encode_pairs(tokenizer, ["Q?"] * 3, ["A", "B" * 99, "C" * 99], 32, site="test")

    assert [e["truncated"] for e in encoded] == [False, True, True]
    assert TRUNCATED == {"test": 2}
    assert [r.getMessage() for r in caplog.records] == [
        "test: 2 of 3 answers cut to fit max_length=32 tokens"
    ]
    assert set(pad_encoded(encoded, tokenizer.pad_token_id)) == {
        "input_ids",
        "attention_mask",
        "labels",
    }
    assert set(collate([{"forget": e} for e in encoded], tokenizer.pad_token_id)["forget"]) == {
        "input_ids",
        "attention_mask",
        "labels",
    }
    TRUNCATED.clear()
