"""Speed without changed results: shared-prefix passes give the plain passes' answers, scores,
losses and gradients; the work ledger and the floors count what they say; the profile and the
cost curve run on the tiny model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, scaled_tiny_model
from omegaconf import DictConfig
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks import prefix
from benchmarks.costs import COSTS, counting_forwards
from benchmarks.data import load_data
from benchmarks.data.records import DataError
from benchmarks.evaluation.generation import answer_logprobs, generate
from benchmarks.floors import ModelShape, forward_floor_s, model_shape
from benchmarks.prompting import Prompter
from benchmarks.speed import check, curve, loss_and_grads, work_figures
from benchmarks.training import Pair, collate, encode_example, lora_config, mean_nll
from unstar import prompts as unstar_prompts

QUESTIONS = [
    "Where was Albert Einstein born, and in which year?",
    "Who wrote Hamlet?",
    "What is the capital of France and its largest city by population?",
    "Hi?",
]


@pytest.fixture
def model(make_cfg: Callable[..., DictConfig]):
    """The tiny model, scaled so that its output depends on the whole context."""
    return scaled_tiny_model(make_cfg())


def rows_computed(phase: str, kind: str) -> int:
    forwards = COSTS.work_as_dict()[phase][kind]["forwards"]
    return sum(rows * n for rows, _, _, n in forwards)


def test_shared_prefix_sampling_draws_what_model_generate_draws(model) -> None:
    """While no row has ended, the decoding loop draws exactly what ``model.generate`` draws."""
    lm, tokenizer = model
    few_shot = [unstar_prompts.PARAPHRASE.format(question=q) for q in QUESTIONS]
    COSTS.clear()
    found = {}
    for share in (True, False):
        with COSTS.phase(f"share={share}"):
            found[share] = generate(
                lm, tokenizer, few_shot, max_new_tokens=6, temperature=1.0, num_samples=3,
                batch_size=3, seed=5, share_prefix=share,
            )  # fmt: skip
    assert found[True] == found[False]
    assert len({t for texts in found[True] for t in texts}) > 3, "samples should differ"
    # The few-shot template and each prompt are computed once, not once per sample.
    assert rows_computed("share=True", "generate") < rows_computed("share=False", "generate") / 2
    # Control: another seed draws other samples, so the equality above can see a change.
    other = generate(
        lm, tokenizer, few_shot, max_new_tokens=6, temperature=1.0, num_samples=3, batch_size=3,
        seed=6,
    )  # fmt: skip
    assert other != found[True]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_completion_that_ends_leaves_the_batch_and_the_others_continue_as_before(
    model, temperature: float
) -> None:
    lm, tokenizer = model
    prompts = [Prompter()(tokenizer, q) for q in QUESTIONS]
    samples = 2 if temperature else 1  # model.generate draws one greedy completion per prompt
    options = {"batch_size": 4, "temperature": temperature, "num_samples": samples, "seed": 3}
    first = [t for texts in generate(lm, tokenizer, prompts, max_new_tokens=1, **options)
             for t in texts]  # fmt: skip
    # A row whose first character (a letter) ends its completion at once.
    stop = next(text[0] for text in first if text[:1].isascii() and text[:1].isalpha())
    COSTS.clear()
    found = {}
    for share in (True, False):
        with COSTS.phase(f"share={share}"):
            found[share] = generate(
                lm, tokenizer, prompts, max_new_tokens=8, stop_strings=[stop], share_prefix=share,
                **options,
            )  # fmt: skip
    # model.generate's completions, sampled ones too: the same random numbers for the same rows.
    assert found[True] == found[False]
    assert stop in [t for texts in found[True] for t in texts]
    steps = COSTS.work_as_dict()["share=True"]["generate"]["forwards"]
    decoding = sorted((rows for rows, head, _, _ in steps if rows == head), reverse=True)
    rows = 4 * samples
    assert decoding[0] == rows and decoding[-1] < rows, "rows that ended should leave the batch"


def test_shared_prefix_scores_equal_row_by_row_scores(model) -> None:
    lm, tokenizer = model
    prompts = [Prompter()(tokenizer, q) for q in QUESTIONS]
    pairs = [(p, a) for p in prompts for a in ("Ulm, 1879", "Paris", "I do not know that")]
    COSTS.clear()
    scores = {}
    for share in (True, False):
        with COSTS.phase(f"share={share}"):
            scores[share] = answer_logprobs(
                lm, tokenizer, [p for p, _ in pairs], [a for _, a in pairs], batch_size=5,
                share_prefix=share,
            )  # fmt: skip
    for shared, plain in zip(scores[True], scores[False], strict=True):
        assert len(shared) == len(plain)
        np.testing.assert_allclose(shared, plain, atol=1e-5)
    # Each prompt once per batch, not once per answer (byte tokens: the answers are long here).
    assert rows_computed("share=True", "score") < 0.75 * rows_computed("share=False", "score")
    # One batch's pass is one forward pass in the job's costs, however it is split.
    assert COSTS.as_dict()["share=True"]["forward_passes"] == 3  # ceil(12 / 5) batches


def _batch(tokenizer):
    pairs = [Pair(Prompter()(tokenizer, q), f"Answer {i}") for i, q in enumerate(QUESTIONS)]
    return collate([encode_example(tokenizer, p, 256) for p in pairs], tokenizer.pad_token_id)


def _plain_nll(model, batch) -> torch.Tensor:
    """Mean answer NLL from every position's logits, by hand."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logprobs = torch.log_softmax(logits[:, :-1].float(), -1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum() / mask.sum()


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_training_gives_the_plain_loss_and_gradients(model, lora, make_cfg) -> None:
    lm, tokenizer = model
    if lora:
        lm = get_peft_model(lm, lora_config(make_cfg("method.lora.enabled=true").method.lora))
    lm.train()
    batch = _batch(tokenizer)
    COSTS.clear()
    with COSTS.phase("shared"), counting_forwards(lm):
        loss, grads = loss_and_grads(lm, batch, mean_nll)
    plain_loss, plain_grads = loss_and_grads(lm, batch, _plain_nll)
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    assert torch.allclose(grads, plain_grads, atol=1e-6 * plain_grads.abs().max().item())
    # The common prefix ran once (one row) and the output layer only from the first position
    # that predicts an answer token on (and on the prefix's last position).
    forwards = COSTS.work_as_dict()["shared"]["other"]["forwards"]
    rows, width = batch["input_ids"].shape
    shared = prefix.common_prefix(batch["input_ids"].tolist())
    start = int((batch["labels"] != -100).float().argmax(1).min()) - 1
    assert shared >= prefix.MIN_SHARED
    assert sorted((r, h) for r, h, _, _ in forwards) == sorted(
        [(shared, 1), (rows * (width - shared), rows * (width - start))]
    )


def test_no_prefix_is_shared_under_dropout_while_training() -> None:
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, attention_dropout=0.5,
    )  # fmt: skip
    dropping = LlamaForCausalLM(config)
    dropping.train()
    assert not prefix.can_share(dropping)  # one computed prefix would share one dropout mask
    dropping.eval()
    assert prefix.can_share(dropping)
    with torch.no_grad():
        dropping.train()
        assert prefix.can_share(dropping)  # no gradients: dropout is applied, nothing trained


def test_a_reserved_cache_layer_holds_what_concatenation_holds() -> None:
    """Decoding steps write into the room (no copy of the cache while it lasts); past it the room
    doubles; rows chosen or repeated keep their tokens; keys and values equal the concatenated."""
    from transformers.cache_utils import DynamicLayer

    generator = torch.Generator().manual_seed(0)

    def states(tokens: int, rows: int = 2) -> torch.Tensor:
        return torch.randn(rows, 3, tokens, 4, generator=generator)

    plain = DynamicLayer()
    plain.update(prompt := states(5), prompt + 1)
    reserved = prefix.ReservedLayer(plain, room=2)
    buffer = reserved._keys.data_ptr()
    for step in range(4):
        new = states(1)
        expected = plain.update(new, new * 2)
        found = reserved.update(new, new * 2)
        assert all(torch.equal(a, b) for a, b in zip(found, expected, strict=True))
        if step < 2:
            assert reserved._keys.data_ptr() == buffer, "a step within the room copies nothing"
    assert reserved.get_seq_length() == 9 and reserved._keys.shape[-2] >= 9
    for change in (lambda layer: layer.batch_select_indices(torch.tensor([1, 1, 0])),
                   lambda layer: layer.batch_repeat_interleave(2)):  # fmt: skip
        change(plain)
        change(reserved)
        new = states(1, rows=plain.keys.shape[0])
        expected = plain.update(new, new)
        found = reserved.update(new, new)
        assert all(torch.equal(a, b) for a, b in zip(found, expected, strict=True))


def test_common_prefix() -> None:
    assert prefix.common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert prefix.common_prefix([[1, 2], [1, 2, 3]]) == 2
    assert prefix.common_prefix([[7], [1]]) == 0


def test_the_ledger_times_each_kind_exclusively_and_counts_rows(model) -> None:
    lm, tokenizer = model
    ids = tokenizer(["hello there", "hi you all"], return_tensors="pt", padding=True)
    COSTS.clear()
    with COSTS.phase("p"), counting_forwards(lm), COSTS.timed("train"):
        time.sleep(0.05)
        with COSTS.timed("generate"), torch.no_grad():
            time.sleep(0.1)
            lm(**ids)
        with COSTS.part_of_pass(), torch.no_grad():
            lm(**ids, logits_to_keep=1)
    work = COSTS.work_as_dict()["p"]
    assert 0.05 <= work["train"]["seconds"] < 0.1  # less the nested generation
    assert work["generate"]["seconds"] >= 0.1
    width = ids["input_ids"].shape[1]
    assert work["generate"]["forwards"] == [[2 * width, 2 * width, 0, 1]]
    assert work["train"]["forwards"] == [[2 * width, 2, 0, 1]]
    assert COSTS.as_dict()["p"]["forward_passes"] == 1  # the part of a pass is not a pass
    with pytest.raises(KeyError, match="unknown kind"), COSTS.timed("thinking"):
        pass


def test_model_shape_counts_every_linear_weight_once(model) -> None:
    lm, _ = model
    shape = model_shape(lm)
    hidden, vocab = lm.config.hidden_size, lm.config.vocab_size
    layer = sum(m.weight.numel() for m in lm.model.layers[0].modules() if hasattr(m, "in_features"))
    assert shape.body_params == layer * lm.config.num_hidden_layers
    assert shape.head_params == vocab * hidden  # tied to the embedding, still a product per row
    assert shape.weight_bytes == 4 * shape.params
    assert sum(n_in * n_out * c for (n_in, n_out), c in shape.shapes.items()) == shape.params


def test_work_figures_count_flops_and_the_roofline_floor() -> None:
    shape = ModelShape(body_params=1000, head_params=100, shapes={}, weight_bytes=4400)
    floors = {"matmul_flops_fp32": 1e6, "read_bytes_per_s": 1e6}
    # 2 no-grad forwards of 100 rows (head on 10), 1 full-gradient forward of 50 rows (head 50).
    entry = {"seconds": 2.0, "forwards": [[100, 10, 0, 2], [50, 50, 2, 1]], "train_tokens": 40}
    figures = work_figures(entry, shape, floors)
    flop = 2 * 2 * (1000 * 100 + 100 * 10) + 3 * 2 * (1000 * 50 + 100 * 50)
    assert figures["flop"] == flop
    assert figures["flop_per_s"] == flop / 2.0
    # Each forward: the larger of reading its weights and computing its products.
    assert forward_floor_s(shape, 100, 10, 0, floors) == pytest.approx(max(4400, 202000) / 1e6)
    assert forward_floor_s(shape, 1, 1, 0, floors) == pytest.approx(4400 / 1e6)  # memory-bound
    expected = 2 * 202000 / 1e6 + max(3 * 4400, 330000) / 1e6
    assert figures["floor_s"] == pytest.approx(expected, abs=1e-3)
    assert figures["x_floor"] == pytest.approx(2.0 / expected, rel=1e-3)
    assert figures["weights_gb_per_s"] == pytest.approx((2 + 3) * 4400 / 2.0 / 1e9)
    assert figures["token_rows"] == 250 and figures["train_tokens"] == 40


def test_forget_k_forgets_the_first_k_persons(make_cfg) -> None:
    data = load_data(make_cfg("data.forget_set=forget_20").data)
    assert len(data.forget) == 100 and len(data.subjects_to_forget) == 20
    with pytest.raises(DataError, match=r"lower data\.n_holdout"):
        load_data(make_cfg("data.forget_set=forget_23").data)
    with pytest.raises(DataError, match="forget_<k>"):
        load_data(make_cfg("data.forget_set=forget_0").data)


def test_the_cost_curve_profiles_each_job(tmp_path: Path) -> None:
    points = curve(
        [*TINY, "threads=1"], tmp_path, sets=["data.forget_set=forget_1"], methods=["grad_ascent"]
    )
    [point] = points
    assert point["forget_questions"] == 5 and point["method"] == "grad_ascent"
    record = json.loads((tmp_path / "grad_ascent-forget_1" / "speed.json").read_text())
    rows = record["rows"]
    # The target may come from the session's cache: its fine-tune row is there when it ran.
    assert {"method: training", "evaluation generation", "evaluation scoring"} <= set(rows)
    # The ledger's training tokens are the job's own counts.
    assert rows["method: training"]["train_tokens"] == record["costs"]["unlearn"]["train_tokens"]
    timed = sum(r["seconds"] for name, r in rows.items() if "·" in name)
    assert 0 < timed <= record["job_wall_s"]
    assert json.loads((tmp_path / "curve.json").read_text()) == points


def test_the_check_runs_both_passes_and_finds_them_equal(tmp_path: Path) -> None:
    report = check([*TINY, "threads=1"], tmp_path)
    assert report["evaluation generation"]["answers_changed"] == 0
    assert report["evaluation scoring"]["max_token_logprob_difference"] < 1e-4
    training = report["training steps (forward and backward)"]
    assert training["max_relative_loss_difference"] < 1e-5 and training["batches"] > 0
    timed = [v for v in report.values() if isinstance(v, dict) and "shared" in v]
    assert len(timed) == 4 and all(v["shared"] > 0 and v["plain"] > 0 for v in timed)
    reserved = report["UnSTAR sampled paraphrases, reserved cache room"]
    assert reserved["samples_changed"] == 0 and reserved["samples"] > 0
    assert reserved["reserved"] > 0 and reserved["concatenated"] > 0
    # The same steps with the adapter off compute the same token rows, against the same floor.
    step = report["training step against the matmul floor"]
    assert step["lora"]["token_rows"] == step["frozen"]["token_rows"] > 0
    assert step["lora"]["floor_s"] == step["frozen"]["floor_s"] > 0
    assert all(step[k]["x_floor"] > 0 for k in ("lora", "frozen"))
    assert json.loads((tmp_path / "check.json").read_text()) == report
