"""GA + KL: gradient ascent on the forget answers, KL to the original model on the retain texts.

L = −γ·NLL̄(forget) + α·KL(p_ref ‖ p_θ), the KL averaged over every retain position that
predicts a real token, prompt and answer (:func:`benchmarks.training.sequence_kl`). Keeping the
retain distribution (not just its argmax) close to the original is the point of this variant;
the shared trainer builds the frozen reference for it. Source: the `KL` loss type of
licong-lin/negative-preference-optimization and open-unlearning's GradDiff with
retain_loss_type=KL, γ=α=1 (peer_harnesses.md §2, §8); both average the KL over all positions,
padding included, which we leave out (its share varies with the batch).
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
