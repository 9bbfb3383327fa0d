"""SimNPO: NPO without a reference model, on the length-normalised answer NLL.

L_forget = −(2/β)·mean logσ(β·(NLL(y|x)/|y| − δ)), NLL summed over the |y| answer tokens.
Minimising it raises the mean-token forget NLL, with a gradient that fades once the answer is
unlikely (σ saturates); normalising by length stops long answers from dominating, and no frozen
copy of the model is needed. Defaults δ=0, β=4.5, γ=0.125, α=1 (NLL retain), lr 1e-5:
open-unlearning configs/trainer/SimNPO.yaml and the OPTML-Group/Unlearn-Simple README for TOFU
forget10 (peer_harnesses.md §2, §8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from benchmarks.config import MethodConfig, knob
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import sequence_nll


@dataclass
class SimNPOConfig(MethodConfig):
    beta: float = knob(help="inverse temperature of the sigmoid", gt=0)
    delta: float = knob(help="margin subtracted from the mean-token NLL", ge=0)


@METHODS.register("simnpo")
class SimNPO(TrainingMethod):
    config_class = SimNPOConfig
    search_space: ClassVar[dict[str, str]] = {
        **TrainingMethod.search_space,
        **TrainingMethod.RETAIN_WEIGHT,
        "method.beta": "interval(1.0, 10.0)",
        "method.gamma": "interval(0.05, 1.0)",
    }

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        beta, delta = self.cfg.beta, self.cfg.delta
        nll, lengths = sequence_nll(model, batch)
        mean_token_nll = nll / lengths.clamp(min=1)
        return -(2 / beta) * F.logsigmoid(beta * (mean_token_nll - delta)).mean()
