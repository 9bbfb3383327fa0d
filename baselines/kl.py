"""GA + KL: gradient ascent on the forget answers, KL to the original model on the retain answers.

L = −γ·NLL̄(forget) + α·KL(p_ref ‖ p_θ) on retain answer tokens. Keeping the retain
distribution (not just its argmax) close to the original is the point of this variant; the
shared trainer builds the frozen reference for it and masks prompt and padding, unlike
open-unlearning's compute_kl_divergence. Source: the `KL` loss type of
licong-lin/negative-preference-optimization and open-unlearning's GradDiff with
retain_loss_type=KL, γ=α=1 (peer_harnesses.md §2, §8).
"""

from __future__ import annotations

from typing import ClassVar

from baselines.grad_ascent import GradAscent
from benchmarks.methods import METHODS, TrainingMethod


@METHODS.register("kl")
class GradAscentKL(GradAscent):
    """GA's forget loss; the config turns on the KL retain term (retain_loss=kl)."""

    search_space: ClassVar[dict[str, str]] = {
        **GradAscent.search_space,
        **TrainingMethod.RETAIN_WEIGHT,
    }
