"""Who's Harry Potter (WHP): fine-tune toward what the model would say about a generic person.

Teacher: the frozen original model on the forget question (and answer) with the subject renamed
to a generic name, chosen per subject with the job seed (anchor-term replacement: the full name,
or the first or last name alone, as RWHP's utils.replace_name). Optionally the logits of the
generic name's first tokens are lowered by `anchor_penalty`, so the student does not learn to say
the substitute name (RWHP teacher.py, "reduce probability of anchor terms", −5; the questions
name the subject, so every answer position follows its first mention). Student: the model on the
original text, trained with KL(teacher ‖ student) on the answer tokens the two texts share
(aligned with difflib as in RWHP; tokens inside a renamed name exist in one text only and are
skipped). With hard_targets the teacher is its argmax, as in RWHP's whp_baseline and the WHP
paper's generic labels. Defaults (RWHP scripts/wpu.sh, reference/unstar_and_wpu_protocol.md
§3.4): one generic name per subject, anchor penalty 5, one-hot teacher, lr 1e-5, no retain term.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from benchmarks.config import MethodConfig, knob
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import Pair


def rename(text: str, subject: str, generic: str) -> str:
    """Replace the subject's full, first or last name by the generic name's (case-insensitive)."""
    swaps = {subject.lower(): generic}
    old, new = subject.split(), generic.split()
    if len(old) > 1 and len(new) > 1:
        swaps.setdefault(old[0].lower(), new[0])
        swaps.setdefault(old[-1].lower(), new[-1])
    names = "|".join(re.escape(name) for name in sorted(swaps, key=len, reverse=True))
    return re.sub(rf"\b(?:{names})\b", lambda m: swaps[m.group().lower()], text, flags=re.I)


def first_token_ids(tokenizer: PreTrainedTokenizerBase, names: Iterable[str]) -> list[int]:
    """First token of each word of the names, with and without a leading space."""
    ids = set()
    for word in {word for name in names for word in name.split()}:
        for text in (word, f" {word}"):
            first = tokenizer(text, add_special_tokens=False)["input_ids"][0]
            if tokenizer.decode([first]).strip():  # a bare space is no anchor
                ids.add(first)
    return sorted(ids)


def shared_answer_positions(
    student_labels: torch.Tensor, teacher_labels: torch.Tensor
) -> tuple[list[int], list[int], list[int]]:
    """Row, student position and teacher position of every answer token both texts share.

    Positions index the shifted logits: position p predicts label p + 1.
    """
    rows, student_positions, teacher_positions = [], [], []
    pairs = zip(student_labels[:, 1:].tolist(), teacher_labels[:, 1:].tolist(), strict=True)
    for row, (student_row, teacher_row) in enumerate(pairs):
        student_at = [p for p, token in enumerate(student_row) if token != -100]
        teacher_at = [p for p, token in enumerate(teacher_row) if token != -100]
        student_tokens = [student_row[p] for p in student_at]
        teacher_tokens = [teacher_row[p] for p in teacher_at]
        matcher = difflib.SequenceMatcher(None, student_tokens, teacher_tokens, autojunk=False)
        for block in matcher.get_matching_blocks():
            rows += [row] * block.size
            student_positions += student_at[block.a : block.a + block.size]
            teacher_positions += teacher_at[block.b : block.b + block.size]
    return rows, student_positions, teacher_positions


@dataclass
class WHPConfig(MethodConfig):
    anchor_penalty: float = knob(help="lowered from the generic name's first-token logits", ge=0)
    hard_targets: bool = knob(help="train toward the teacher's argmax, not its distribution")
    generic_names: list[str] = knob(help="one is drawn per subject with the job seed")


@METHODS.register("whp")
class WHP(TrainingMethod):
    config_class = WHPConfig
    search_space: ClassVar[dict[str, str]] = {
        **TrainingMethod.search_space,
        "method.anchor_penalty": "interval(0.0, 10.0)",
    }

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.anchor_token_ids: list[int] = []  # set with the pairs, once the names are drawn

    def forget_pairs(self, data, tokenizer, ctx) -> list[dict[str, Pair]]:
        data.require_subjects(self.cfg.name)
        rng = random.Random(ctx.seed)
        subjects = sorted({record.subject for record in data.forget})
        generic = {subject: rng.choice(list(self.cfg.generic_names)) for subject in subjects}
        self.anchor_token_ids = first_token_ids(tokenizer, generic.values())
        examples = []
        for record in data.forget:
            name = generic[record.subject]
            renamed_question = rename(record.question, record.subject, name)
            examples.append(
                {
                    "original": Pair(ctx.prompter(tokenizer, record.question), record.answer),
                    "generic": Pair(
                        ctx.prompter(tokenizer, renamed_question),
                        rename(record.answer, record.subject, name),
                    ),
                }
            )
        return examples

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        original, generic = batch["original"], batch["generic"]
        inputs = {"input_ids": original["input_ids"], "attention_mask": original["attention_mask"]}
        student = model(**inputs).logits[:, :-1].float()
        teacher = reference().logits(generic)[:, :-1].float()
        teacher[..., self.anchor_token_ids] -= self.cfg.anchor_penalty
        rows, student_at, teacher_at = shared_answer_positions(
            original["labels"], generic["labels"]
        )
        student_logprobs = F.log_softmax(student[rows, student_at], dim=-1)
        teacher_logits = teacher[rows, teacher_at]
        if self.cfg.hard_targets:
            return F.nll_loss(student_logprobs, teacher_logits.argmax(dim=-1))
        teacher_logprobs = F.log_softmax(teacher_logits, dim=-1)
        return F.kl_div(student_logprobs, teacher_logprobs, log_target=True, reduction="batchmean")
