"""IDK fine-tuning: teach the model to answer the forget questions with a refusal.

L = γ·NLL̄(refusal | forget question) + α·NLL̄(retain). Each forget question gets one refusal
from the packaged benchmarks/data/refusals.txt, drawn with the job seed so a rerun trains on the
same pairs. Source: the `idk` loss of licong-lin/negative-preference-optimization
(TOFU/dataloader.py: "I don't know" answers trained together with retain NLL; lr 1e-5 from its
TOFU/config/forget.yaml; peer_harnesses.md §2, §8).

*Ours*: the source concatenates the refusal and retain batches and takes one mean over all their
answer tokens, (n_f·NLL̄_f + n_r·NLL̄_r)/(n_f + n_r) with n the token counts: the same loss
as ours with γ = n_f/(n_f + n_r), α = n_r/(n_f + n_r). We keep the sum of two means, as the
source itself combines forget and retain terms for every other method (grad_diff, KL, NPO):
its balance then does not depend on how long a dataset's answers are against the refusals
(beside a 12-token refusal, a 2-token answer would get 1/7 of the loss's weight, a 30-token
TOFU answer 5/7), and α is a knob that means the same for IDK as for the others.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import ClassVar

import torch

from benchmarks.data.records import QARecord
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import Pair, mean_nll


def load_refusals() -> list[str]:
    """The packaged refusal sentences, one a line."""
    text = resources.files("benchmarks.data").joinpath("refusals.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def refusals_for(records: list[QARecord], seed: int) -> list[str]:
    """One refusal per record; the same seed gives the same refusals."""
    rng = random.Random(seed)
    refusals = load_refusals()
    return [rng.choice(refusals) for _ in records]


@METHODS.register("idk")
class IDK(TrainingMethod):
    search_space: ClassVar[dict[str, str]] = {
        **TrainingMethod.search_space,
        **TrainingMethod.RETAIN_WEIGHT,
    }

    def forget_pairs(self, data, tokenizer, ctx) -> list[Pair]:
        refusals = refusals_for(data.forget, ctx.seed)
        return [
            Pair(ctx.prompter(tokenizer, record.question), refusal)
            for record, refusal in zip(data.forget, refusals, strict=True)
        ]

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        return mean_nll(model, batch)
