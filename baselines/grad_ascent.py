"""Gradient ascent (GA): maximise the NLL of the forget answers.

The simplest unlearning baseline and the one every later method is measured against; with no
retain term it usually damages the rest of the model too (peer_harnesses.md §2).
"""

from __future__ import annotations

import torch

from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import mean_nll


@METHODS.register("grad_ascent")
class GradAscent(TrainingMethod):
    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        return -mean_nll(model, batch)
