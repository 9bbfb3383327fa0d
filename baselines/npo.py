"""Negative preference optimisation (NPO): push the forget answers below the original model's.

L_forget = −(2/β)·mean logσ(−β·(log πθ(y|x) − log πref(y|x))), with log-probs summed over the
answer tokens. It is gradient ascent weighted by how likely the answer still is relative to the
frozen reference, so it slows down once an answer is unlikely instead of diverging like GA; at
the first step (θ = ref) it equals (2/β)·log 2. Defaults β=0.1, γ=α=1 with NLL retain, lr 1e-5:
licong-lin/negative-preference-optimization TOFU/config/forget.yaml and open-unlearning's NPO
(peer_harnesses.md §2, §8); WPU's RWHP scripts use the same β and retain weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from benchmarks.config import MethodConfig, knob
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import Batch, Reference, sequence_nll, token_logprobs


def log_ratio(model, batch: Batch, reference: Reference) -> torch.Tensor:
    """log πθ(y|x) − log πref(y|x) per sequence, summed over the answer tokens."""
    nll, _ = sequence_nll(model, batch)
    reference_logprobs, _ = token_logprobs(reference.logits(batch), batch["labels"])
    return -nll - reference_logprobs.sum(-1)


@dataclass
class NPOConfig(MethodConfig):
    beta: float = knob(help="inverse temperature: how soon the push on an answer fades", gt=0)


@METHODS.register("npo")
class NPO(TrainingMethod):
    config_class = NPOConfig
    search_space: ClassVar[dict[str, str]] = {
        **TrainingMethod.search_space,
        **TrainingMethod.RETAIN_WEIGHT,
        "method.beta": "tag(log, interval(0.01, 1.0))",
    }

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        beta = self.cfg.beta
        return -(2 / beta) * F.logsigmoid(-beta * log_ratio(model, batch, reference())).mean()
