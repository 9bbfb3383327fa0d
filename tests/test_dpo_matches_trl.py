"""Our DPO forget loss is TRL's DPO sigmoid loss scaled by 2/β, checked against TRL itself.

TRL 1.16 has no standalone DPO loss: it is inlined in ``DPOTrainer._compute_loss``. So the test
builds a real ``DPOTrainer`` (``loss_type="sigmoid"``, a frozen copy of the original model as
``ref_model``, no precomputed reference log-probs, CPU) on the tiny random model, whose trained
copy has its weights perturbed so that it differs from the reference and the loss is not just
(2/β)·log 2. TRL gets the same pairs that ``DPO.forget_pairs`` builds, in its standard
non-conversational format: prompt = our formatted chat prompt string, chosen = the refusal,
rejected = the true answer. TRL appends the EOS token string to each completion and tokenises
prompt + completion as one string with ``add_special_tokens`` on; the tiny tokenizer adds no
BOS and splits text into bytes, so its token ids equal ours (prompt ids, answer ids, EOS id),
and the test checks that explicitly, along with TRL's completion mask against our labels, before
comparing the losses on one batch of TRL's own train dataloader.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
import torch
from omegaconf import DictConfig
from trl import DPOConfig, DPOTrainer

from baselines.dpo import DPO
from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.methods import METHODS, JobContext
from benchmarks.models import cache_dir, load_model
from benchmarks.training import Reference, collate, encode_example

#: Three forget questions with answers of different lengths, so that both sides pad.
DATA = UnlearningData(
    name="hand-made",
    records=(
        QARecord("f1", "Marie Curie", "In which city was Marie Curie born?", "Warsaw", "forget"),
        QARecord("f2", "Marie Curie", "Which element did she name after Poland?", "Po", "forget"),
        QARecord("f3", "Alan Turing", "Where did Alan Turing study?", "At Cambridge", "forget"),
        QARecord("r1", "Ada Lovelace", "Whose daughter was Ada Lovelace?", "Byron's", "retain"),
    ),
    subjects_to_forget=("Marie Curie", "Alan Turing"),
)


def perturbed(model: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """A copy of ``model`` with seeded Gaussian noise added to every weight."""
    moved = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter += scale * torch.randn(parameter.shape, generator=generator)
    return moved


def unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """Each row's ids where ``mask`` is 1."""
    return [row[keep.bool()].tolist() for row, keep in zip(ids, mask, strict=True)]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_forget_loss_is_2_over_beta_times_trl_sigmoid_loss(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, beta: float
) -> None:
    original, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    model = perturbed(original)
    method = METHODS.get("dpo")(make_cfg("method=dpo", f"method.beta={beta}").method)
    assert isinstance(method, DPO)
    ctx = JobContext(seed=0, output_dir=tmp_path, cache_dir=tmp_path)
    examples = method.forget_pairs(DATA, tokenizer, ctx)

    # Ours: the pairs encoded and collated as the shared trainer does, against the original.
    ours_batch = collate(
        [encode_example(tokenizer, e, 256) for e in examples], tokenizer.pad_token_id
    )
    reference = Reference(original)
    with torch.no_grad():
        ours = method.forget_loss(model, ours_batch, lambda: reference).item()

    # TRL's: the same pairs as a preference dataset, trained and reference models as copies
    # (DPOTrainer patches their forward with its fused LM head).
    for example in examples:
        assert example["chosen"].prompt == example["rejected"].prompt
    rows = [
        {
            "prompt": e["chosen"].prompt,
            "chosen": e["chosen"].answer,
            "rejected": e["rejected"].answer,
        }
        for e in examples
    ]
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=beta,
        loss_type="sigmoid",
        precompute_ref_log_probs=False,
        per_device_train_batch_size=len(rows),
        train_sampling_strategy="sequential",
        max_length=None,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    trainer = DPOTrainer(
        model=copy.deepcopy(model),
        ref_model=copy.deepcopy(original),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=copy.deepcopy(tokenizer),
    )
    trl_batch = next(iter(trainer.get_train_dataloader()))

    # Same token ids and the same scored positions: TRL's batch is [chosen rows; rejected rows].
    trl_chosen, trl_rejected = (
        unpadded(ids, mask)
        for ids, mask in zip(
            trl_batch["input_ids"].chunk(2), trl_batch["attention_mask"].chunk(2), strict=True
        )
    )
    trl_masks = unpadded(trl_batch["completion_mask"], trl_batch["attention_mask"])
    for name, trl_ids, trl_mask in (
        ("chosen", trl_chosen, trl_masks[: len(rows)]),
        ("rejected", trl_rejected, trl_masks[len(rows) :]),
    ):
        ours_side = ours_batch[name]
        assert trl_ids == unpadded(ours_side["input_ids"], ours_side["attention_mask"]), name
        answer = (ours_side["labels"] != -100).long()
        assert trl_mask == unpadded(answer, ours_side["attention_mask"]), name

    with torch.no_grad():
        trl = trainer.compute_loss(trainer.model, trl_batch).item()

    # The models differ enough that β's place in the formula shows in the loss.
    assert abs(trl - math.log(2)) > 0.05
    assert ours == pytest.approx(2 / beta * trl, rel=1e-5)
