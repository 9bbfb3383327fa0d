"""Gradient difference (GD): gradient ascent on the forget answers, NLL on the retain answers.

L = −γ·NLL̄(forget) + α·NLL̄(retain). The forget term is GA's; the retain term, which keeps the
rest of the model from collapsing, comes from the shared trainer (config: alpha=1,
retain_loss=nll, as open-unlearning configs/trainer/GradDiff.yaml; peer_harnesses.md §2).
"""

from __future__ import annotations

from typing import ClassVar

from baselines.grad_ascent import GradAscent
from benchmarks.methods import METHODS, TrainingMethod


@METHODS.register("grad_diff")
class GradDiff(GradAscent):
    """GA's forget loss; the config turns on the NLL retain term."""

    search_space: ClassVar[dict[str, str]] = {
        **GradAscent.search_space,
        **TrainingMethod.RETAIN_WEIGHT,
    }
