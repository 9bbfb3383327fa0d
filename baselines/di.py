"""DI (deliberate imagination): self-distil toward the frozen model with the memorised token
pushed down, so the student learns to "imagine" other continuations of the forget answers.

Loss, on the answer positions p of each forget (question, true answer) pair:

    teacher_p = softmax(z_ref,p − strength · onehot(y_{p+1}))     z_ref: frozen original model
    L = mean_p KL(teacher_p ‖ p_θ,p)                              (+ α · retain term, off)

Where each choice comes from:

- The formula is Dong et al. 2024 (arXiv 2402.10052, "Unmemorization in LLMs via
  Self-Distillation and Deliberate Imagination"; later titled UNDIAL): the teacher's logits minus
  ``di_strength`` on the one-hot of the original next token, softmaxed into a soft label the
  student is trained on (authors' code dong-river/LLM_unlearning, utils/ft_utils.py
  ``DITrainer.compute_loss``; the same in open-unlearning's UNDIAL, ``beta``). RWHP
  (UCSB-NLP-Chang/causal_unlearn) lists ``di`` among its distillation losses: dataloader.py
  trains it like ``whp`` and ``intervention`` — precomputed teacher probabilities, KL(teacher ‖
  student) per position, averaged over the trained positions — but its teacher builder is not
  released (reference/unstar_and_wpu_protocol.md §3.4).
- Teacher = the frozen original model itself (self-distillation, the paper's framing; the
  harness's lazily built :class:`~benchmarks.training.Reference`). Interpretation: the authors'
  script can load a separate ``--teacher_model``; we keep the paper's self-teacher.
- Positions: the answer tokens only (prompt and padding masked), as RWHP's WPU QA setting and
  open-unlearning's UNDIAL (labels ≠ −100). Dong et al. train on raw text, every position.
- Divergence: KL(teacher ‖ student). Dong et al. minimise the cross-entropy to the soft label,
  which is this KL plus the teacher's entropy, a constant: same gradients. Interpretation: we
  report the KL, so the loss is 0 when the student equals the teacher (strength 0, first step).
- Defaults, conf/method/di.yaml: strength 3 (the authors' README commands; their argparse default
  is 5, open-unlearning's 1 with [3, 10, 30] suggested), lr 1e-5 (RWHP scripts/wpu.sh for every
  distillation loss), no retain term (Dong et al. and RWHP train without retain data), 5 epochs
  as the other baselines of this harness (RWHP: 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from benchmarks.config import MethodConfig, knob
from benchmarks.methods import METHODS, TrainingMethod


@dataclass
class DIConfig(MethodConfig):
    strength: float = knob(
        help="lowered from the teacher's logit of each original next token", ge=0
    )


def imagined_teacher_logprobs(
    teacher_logits: torch.Tensor, labels: torch.Tensor, strength: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's log-probs at the answer positions with each original next token's logit
    lowered by ``strength``, and the mask of those positions (shifted: p predicts label p + 1)."""
    next_tokens = labels[:, 1:]
    mask = next_tokens != -100
    logits = teacher_logits[:, :-1].float()[mask]
    penalty = F.one_hot(next_tokens[mask], logits.shape[-1]).to(logits.dtype)
    return F.log_softmax(logits - strength * penalty, dim=-1), mask


@METHODS.register("di")
class DeliberateImagination(TrainingMethod):
    config_class = DIConfig
    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-6, 1e-4))",
        "method.epochs": "range(1, 10)",
        "method.strength": "tag(log, interval(1.0, 30.0))",
    }

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        teacher, mask = imagined_teacher_logprobs(
            reference().logits(batch), batch["labels"], self.cfg.strength
        )
        student = F.log_softmax(model(**inputs).logits[:, :-1].float()[mask], dim=-1)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean")
