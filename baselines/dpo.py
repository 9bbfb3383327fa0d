"""DPO with a refusal as the preferred answer and the true answer as the rejected one.

L_forget = −(2/β)·mean logσ(β·[(log πθ − log πref)(refusal) − (log πθ − log πref)(answer)]),
log-probs summed over the answer tokens, against the frozen original model. The refusal is the
one IDK would train on (same seed, benchmarks/data/refusals.txt). Formula and defaults β=0.1,
γ=α=1 (NLL retain), lr 1e-5: open-unlearning's DPO trainer with IDK answers (IdkDPO) and the
`dpo_grad_diff` loss of licong-lin/negative-preference-optimization (peer_harnesses.md §2, §8).
It runs on the shared trainer rather than TRL's DPOTrainer, which has no retain term and builds
its own reference model and tokenisation; the loss is TRL's sigmoid loss scaled by 2/β.
tests/test_dpo_matches_trl.py checks this against TRL's DPOTrainer on the same token ids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.idk import refusals_for
from baselines.npo import NPO, NPOConfig, log_ratio
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import Pair


@METHODS.register("dpo")
class DPO(TrainingMethod):
    config_class = NPOConfig  # β is DPO's only knob of its own, with NPO's meaning
    search_space = NPO.search_space

    def forget_pairs(self, data, tokenizer, ctx) -> list[dict[str, Pair]]:
        refusals = refusals_for(data.forget, ctx.seed)
        examples = []
        for record, refusal in zip(data.forget, refusals, strict=True):
            prompt = ctx.prompter(tokenizer, record.question)
            examples.append(
                {"chosen": Pair(prompt, refusal), "rejected": Pair(prompt, record.answer)}
            )
        return examples

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        beta, frozen = self.cfg.beta, reference()
        margin = log_ratio(model, batch["chosen"], frozen) - log_ratio(
            model, batch["rejected"], frozen
        )
        return -(2 / beta) * F.logsigmoid(beta * margin).mean()
