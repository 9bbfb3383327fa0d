"""RWHP and WHP+ on the tiny random model: the counterfactual texts, the teacher as an average of
probabilities with the names changed back, the loss's value and direction, and whole jobs."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import test_baselines
import torch
import torch.nn.functional as F

from baselines.rwhp import change_name_back
from baselines.whp import first_token_ids
from benchmarks.config import ConfigError
from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.job import run_job
from benchmarks.prompting import Prompter, encode_pair
from benchmarks.training import (
    Batch,
    Reference,
    collate,
    encode_example,
    mean_nll,
    sequence_nll,
)

# Helpers and fixtures of the other baselines' tests (the tiny model, the built references).
build, context, lazy_reference = (
    test_baselines.build,
    test_baselines.context,
    test_baselines.lazy_reference,
)
tiny, built = test_baselines.tiny, test_baselines.built

#: Forget answers that name their subject, so that renaming reaches the answers too.
NAMED = UnlearningData(
    name="named",
    records=(
        QARecord("f1", "Marie Curie", "Where was Marie Curie born?", "Curie was born in Warsaw.",
                 "forget"),
        QARecord("f2", "Marie Curie", "What did Curie discover?", "Marie found polonium.",
                 "forget"),
        QARecord("f3", "Alan Turing", "Where did Alan Turing study?", "Turing studied at King's.",
                 "forget"),
        QARecord("r1", "Isaac Newton", "When was Isaac Newton born?", "In 1643.", "retain"),
    ),
    subjects_to_forget=("Marie Curie", "Alan Turing"),
)  # fmt: skip


def encoded_batch(tokenizer, pairs: list[tuple[str, str]]) -> Batch:
    prompter = Prompter()
    encoded = [encode_pair(tokenizer, prompter(tokenizer, q), a) for q, a in pairs]
    return collate(encoded, tokenizer.pad_token_id)


def copy_of(batch: Batch) -> Batch:
    return {key: value.clone() for key, value in batch.items()}


class PerBatchLogits:
    """A reference whose logits the test sets per counterfactual batch (by identity)."""

    def __init__(self, logits: dict[int, torch.Tensor]) -> None:
        self.by_batch = logits

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.by_batch[id(batch["input_ids"])]


def forget_examples(method, tokenizer, tmp_path: Path, data: UnlearningData = NAMED) -> list:
    return method.forget_pairs(data, tokenizer, context(tmp_path))


def test_each_question_gets_n_renamed_texts_under_a_prompt_naming_the_substitute(
    make_cfg, tiny, tmp_path
) -> None:
    _, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp", "method.n_counterfactuals=3")
    examples = forget_examples(rwhp, tokenizer, tmp_path)

    names_by_subject: dict[str, list[tuple[str, ...]]] = {}
    for record, example in zip(NAMED.forget, examples, strict=True):
        assert list(example) == ["original", "cf0", "cf1", "cf2"]
        assert record.question in example["original"].prompt
        assert example["original"].answer == record.answer
        names = []
        for key in ("cf0", "cf1", "cf2"):
            pair = example[key]
            assert not any(word in pair.prompt + pair.answer for word in record.subject.split())
            (name,) = [n for n in rwhp.cfg.counterfactual_names if f"about {n}." in pair.prompt]
            assert name.split()[-1] in pair.prompt  # the renamed question names the substitute
            names.append(name)
        assert len(set(names)) == 3
        names_by_subject.setdefault(record.subject, []).append(tuple(names))
    # One draw per subject (as WHP's), fixed by the seed.
    assert all(len(set(draws)) == 1 for draws in names_by_subject.values())
    assert examples == forget_examples(rwhp, tokenizer, tmp_path)
    assert set(rwhp.name_token_ids) >= set(first_token_ids(tokenizer, names))


def test_whp_plus_is_one_generic_name_without_a_preamble(make_cfg, tiny, tmp_path) -> None:
    _, tokenizer = tiny
    whp_plus = build(make_cfg, "whp_plus")
    for example in forget_examples(whp_plus, tokenizer, tmp_path):
        assert list(example) == ["original", "cf0"]
        assert "about" not in example["cf0"].prompt
        assert whp_plus.cfg.change_name_back and whp_plus.cfg.n_counterfactuals == 1


def test_more_counterfactuals_than_names_is_a_config_error(make_cfg, tiny, tmp_path) -> None:
    _, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp", "method.n_counterfactuals=3",
                 "method.counterfactual_names=[Anna Keller,James Porter]")  # fmt: skip
    with pytest.raises(ConfigError, match="n_counterfactuals=3"):
        forget_examples(rwhp, tokenizer, tmp_path)


def test_teacher_is_the_average_of_the_counterfactual_probabilities(make_cfg, tiny) -> None:
    _, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp")
    original = encoded_batch(tokenizer, [("Who?", "An answer"), ("Where was it?", "Here")])
    first, second = copy_of(original), copy_of(original)
    generator = torch.Generator().manual_seed(0)
    shape = (*original["labels"].shape, len(tokenizer))
    a, b = (3 * torch.randn(shape, generator=generator) for _ in range(2))
    reference = PerBatchLogits({id(first["input_ids"]): a, id(second["input_ids"]): b})
    batch = {"original": original, "cf0": first, "cf1": second}

    rows, positions, teacher = rwhp.average_teacher(batch, lambda: reference)

    answer = original["labels"][:, 1:] != -100
    assert sorted(zip(rows, positions, strict=True)) == [
        tuple(p) for p in answer.nonzero().tolist()
    ]
    by_hand = (F.softmax(a, -1) + F.softmax(b, -1)) / 2
    torch.testing.assert_close(teacher, by_hand[rows, positions])
    assert not torch.allclose(teacher, F.softmax((a + b) / 2, -1)[rows, positions], atol=1e-3)


def test_loss_is_zero_when_every_counterfactual_is_the_original_text(make_cfg, tiny) -> None:
    model, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp")
    original = encoded_batch(tokenizer, [("Who?", "An answer"), ("Where was it?", "Here")])
    batch = {"original": original, "cf0": copy_of(original), "cf1": copy_of(original)}

    loss = rwhp.forget_loss(model, batch, lazy_reference(model))

    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_loss_on_unrenamed_texts_is_the_answer_token_kl_to_the_reference(make_cfg, tiny) -> None:
    model, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp")
    original = encoded_batch(tokenizer, [("Who?", "An answer"), ("Where was it?", "Here")])
    batch = {"original": original, "cf0": copy_of(original)}
    reference = Reference(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))

    loss = rwhp.forget_loss(model, batch, lambda: reference)

    # KL(reference ‖ model) averaged over the answer tokens, by hand.
    inputs = {"input_ids": original["input_ids"], "attention_mask": original["attention_mask"]}
    answer = original["labels"][:, 1:] != -100
    with torch.no_grad():
        logp = F.log_softmax(model(**inputs).logits[:, :-1].float(), -1)[answer]
    ref_logp = F.log_softmax(reference.logits(original)[:, :-1].float(), -1)[answer]
    expected = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
    assert expected.item() > 1e-4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_substitute_names_are_changed_back_to_the_subjects(make_cfg, tiny) -> None:
    _, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp")
    rwhp.name_token_ids = first_token_ids(tokenizer, ["Anna Keller"])
    original = encoded_batch(tokenizer, [("Who was she?", "Curie was born there.")])
    counterfactual = encoded_batch(tokenizer, [("Who was she?", "Keller was born there.")])
    (k_id,) = tokenizer("K", add_special_tokens=False)["input_ids"]
    (c_id,) = tokenizer("C", add_special_tokens=False)["input_ids"]
    logits = torch.zeros((*counterfactual["labels"].shape, len(tokenizer)))
    logits[..., k_id] = 8.0  # every counterfactual position predicts the substitute's "K"
    reference = PerBatchLogits({id(counterfactual["input_ids"]): logits})
    batch = {"original": original, "cf0": counterfactual}
    first_answer = (original["labels"][0, 1:] != -100).nonzero()[0].item()  # predicts "C"

    rows, positions, teacher = rwhp.average_teacher(batch, lambda: reference)

    before = F.softmax(logits[0, 0], -1)
    at = positions.index(first_answer)
    moved = before[c_id] + before[rwhp.name_token_ids].sum()  # "K" and the other name's "A"
    assert teacher[at, c_id].item() == pytest.approx(moved.item())
    assert (teacher[at, rwhp.name_token_ids] == 0).all()
    torch.testing.assert_close(teacher.sum(-1), torch.ones(len(rows)))
    others = [i for i in range(len(rows)) if i != at]
    assert (teacher[others, k_id] > 0.5).all(), "elsewhere the teacher is left as it was"
    # Positions inside the renamed name exist in one text only: never trained.
    assert first_answer + 1 not in positions

    rwhp.cfg.change_name_back = False
    assert first_answer not in rwhp.average_teacher(batch, lambda: reference)[1]


def test_every_renamed_answer_trains_the_subjects_name_not_a_substitute(
    make_cfg, tiny, tmp_path
) -> None:
    model, tokenizer = tiny
    # Substitute initials (A, K, J, P, D, B) differ from the subjects' (M, C, T): no name token is
    # shared, so every renamed name is a name start for every teacher.
    names = "method.counterfactual_names=[Anna Keller,James Porter,David Brooks]"
    rwhp = build(make_cfg, "rwhp", "method.n_counterfactuals=2", names)
    examples = forget_examples(rwhp, tokenizer, tmp_path)
    batch = collate([encode_example(tokenizer, e, 256) for e in examples], tokenizer.pad_token_id)

    rows, positions, teacher = rwhp.average_teacher(batch, lazy_reference(model))

    aligned = dict(zip(zip(rows, positions, strict=True), teacher, strict=True))
    labels = batch["original"]["labels"]
    checked = 0
    for row, record in enumerate(NAMED.forget):
        answer = (labels[row, 1:] != -100).nonzero().flatten().tolist()  # positions
        tokens = [tokenizer.decode(labels[row, p + 1]) for p in answer]
        offsets = list(itertools.accumulate(len(token) for token in tokens))
        for name in (n for n in record.subject.split() if n in record.answer):
            start = answer[[0, *offsets].index(record.answer.index(name))]  # predicts its 1st token
            probs = aligned[row, start]
            assert (probs[rwhp.name_token_ids] == 0).all(), f"{record.id}: a substitute is taught"
            assert probs[labels[row, start + 1]] > probs.median(), f"{record.id}: name not moved"
            checked += 1
    assert checked == 3


def test_change_name_back_keeps_a_target_that_is_itself_a_name_token() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])

    moved = change_name_back(probs, torch.tensor([0, 2]), name_ids=[2, 3])

    torch.testing.assert_close(moved, torch.tensor([[0.8, 0.2, 0.0, 0.0], [0.25, 0.25, 0.5, 0.0]]))


def test_steps_move_the_student_to_the_teacher_and_away_from_the_answer(
    make_cfg, tiny, tmp_path
) -> None:
    model, tokenizer = tiny
    rwhp = build(make_cfg, "rwhp", "method.n_counterfactuals=2")
    examples = forget_examples(rwhp, tokenizer, tmp_path)
    batch = collate([encode_example(tokenizer, e, 256) for e in examples], tokenizer.pad_token_id)
    # The frozen original knows nothing; the student first learns the answers (a target model).
    reference = Reference(copy.deepcopy(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):
        optimizer.zero_grad()
        mean_nll(model, batch["original"]).backward()
        optimizer.step()

    def measure() -> SimpleNamespace:
        with torch.no_grad():
            return SimpleNamespace(
                loss=rwhp.forget_loss(model, batch, lambda: reference).item(),
                answer=-sequence_nll(model, batch["original"])[0].sum().item(),
            )

    before = measure()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        rwhp.forget_loss(model, batch, lambda: reference).backward()
        optimizer.step()
    after = measure()

    assert after.loss < before.loss - 1e-3
    assert after.answer < before.answer - 1e-3


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("rwhp", ()), ("whp_plus", ()), ("rwhp", ("method.lora.enabled=true",))],
    ids=["rwhp", "whp_plus", "rwhp-lora"],
)
def test_job_runs_and_builds_the_reference_once(make_cfg, tmp_path, built, name, overrides) -> None:
    cfg = make_cfg(
        f"method={name}",
        "method.max_steps=1",
        "method.n_counterfactuals=2" if name == "rwhp" else "method.n_counterfactuals=1",
        "eval=quick",
        "eval.max_new_tokens=4",
        *overrides,
    )

    results = run_job(cfg, tmp_path / name)

    assert results["status"] == "ok"
    assert results["metrics"]["unlearned"]["forget"]
    assert len(built) == 1
