"""Prompt-distill: distil the Prompt baseline's behaviour into the weights.

Teacher: the frozen original model on the forget question WITH the Prompt baseline's system prompt
(the same template and subject list: :class:`baselines.prompt.PromptBaseline` formats it).
Student: the model on the same question WITHOUT it, evaluated without it. Loss: KL(teacher ‖
student) on the answer tokens both texts share (aligned with WHP's
:func:`baselines.whp.shared_answer_positions`; the answers are the same text, so every answer token
unless truncation cut one side), averaged over tokens.

Where each choice comes from:

- The baseline is in RWHP's and UnSTAR's comparison (reference/unstar_and_wpu_protocol.md §2,
  §3.4). RWHP (UCSB-NLP-Chang/causal_unlearn) trains ``prompt_distill`` with the loss of its other
  distillation methods (dataloader.py: KL(teacher ‖ student) at the stored positions, averaged
  per position) but does not release its teacher builder; data_module.py shows what it consumes:
  per forget person the *student's input ids* and, per QA, ``matched_probs`` at
  ``matched_original_ids_index``; plus one QA of a separate ``unrelated_qa`` store per forget item.
- Which answer tokens (``answer``): by default the teacher's own greedy answer to the prompted
  question, generated once before training (``teacher``); ``true`` uses the dataset's answer.
  Interpretation, for three reasons: (1) RWHP stores the student's input ids and "matched"
  positions instead of building them from the dataset's question and answer as it does for every
  other loss, which fits a text the teacher produced and matched back onto the student's
  tokenisation; (2) context distillation (Askell et al. 2021, arXiv 2112.00861; Snell et al. 2022,
  arXiv 2209.15189) teaches the student what the prompted teacher itself says; (3) on the
  true answer, teacher forcing feeds the prompted teacher the memorised fact, whose continuation
  the system prompt barely changes: only the first answer tokens would carry the prompt's effect.
- Unrelated questions (``mix_retain``): RWHP adds to each forget item one distillation example
  of an unrelated QA, with the same prompted teacher, so the student also learns that the prompt
  leaves other people's answers alone. Interpretation: its unrelated QA are our retain questions,
  one drawn per forget question with the job seed, answered like the forget ones.
- Retain term: the trainer's ``alpha``/``retain_loss``, off by default as RWHP's
  ``retain_strength`` 0 (scripts/wpu.sh).
- Defaults, conf/method/prompt_distill.yaml: the Prompt baseline's system prompt
  (conf/method/prompt.yaml, composed in), greedy teacher answers of up to 32 new tokens (the
  harness's eval.max_new_tokens; RWHP generates up to 200 tokens in all), lr 1e-5 (RWHP
  scripts/wpu.sh for its distillation losses), 5 epochs as the other baselines (RWHP: 10),
  max_length 1024 (the teacher's prompt carries the subject list: 100 names for WPU forget_100).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from baselines.prompt import PromptBaseline, PromptConfig
from baselines.whp import shared_answer_positions
from benchmarks.config import knob
from benchmarks.evaluation.generation import generate
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.prompting import Prompter
from benchmarks.training import Batch, Pair


@dataclass
class PromptDistillConfig(PromptConfig):
    answer: str = knob(
        "teacher", "teacher: its greedy answer; true: the dataset's", choices=("teacher", "true")
    )
    max_new_tokens: int = knob(32, "length of the teacher's greedy answers", ge=1)
    mix_retain: bool = knob(True, "also distil the prompted teacher on a retain question each")


@METHODS.register("prompt_distill")
class PromptDistill(TrainingMethod):
    config_class = PromptDistillConfig
    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-6, 1e-4))",
        "method.epochs": "range(1, 10)",
        "method.mix_retain": "choice(true, false)",
    }

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.teacher_prompter: Prompter | None = None  # set by prepare()
        self.answers: dict[str, str] = {}  # question: the prompted teacher's greedy answer

    def prepare(self, model, tokenizer, data, ctx) -> None:
        """The teacher's prompter and (answer=teacher) its answers, from the untrained model."""
        self.teacher_prompter = (
            PromptBaseline(self.cfg).unlearn(model, tokenizer, data, ctx).prompter
        )
        self.answers = {}
        if self.cfg.answer == "teacher":
            questions = list(dict.fromkeys(r.question for r in self._records(data, ctx.seed)))
            prompts = [self.teacher_prompter(tokenizer, q) for q in questions]
            generated = generate(
                model, tokenizer, prompts, max_new_tokens=self.cfg.max_new_tokens,
                seed=ctx.seed, desc="prompt_distill teacher",
            )  # fmt: skip
            self.answers = {q: outputs[0] for q, outputs in zip(questions, generated, strict=True)}

    def unlearn(self, model, tokenizer, data, ctx):
        self.prepare(model, tokenizer, data, ctx)
        unlearned = super().unlearn(model, tokenizer, data, ctx)
        unlearned.metrics["system_prompt"] = self.teacher_prompter.system_prompt
        return unlearned

    def _records(self, data, seed: int) -> list:
        """The forget records, then one retain record per forget record (mix_retain)."""
        records = list(data.forget)
        if self.cfg.mix_retain and data.retain:
            rng = random.Random(seed)
            records += [rng.choice(data.retain) for _ in data.forget]
        return records

    def forget_pairs(self, data, tokenizer, ctx) -> list[dict[str, Pair]]:
        if self.teacher_prompter is None:
            raise RuntimeError("PromptDistill.prepare() builds the teacher before forget_pairs()")
        records = self._records(data, ctx.seed)
        n = len(data.forget)

        def pairs(record, prefix: str) -> dict[str, Pair]:
            answer = self.answers[record.question] if self.answers else record.answer
            return {
                f"{prefix}teacher": Pair(self.teacher_prompter(tokenizer, record.question), answer),
                f"{prefix}student": Pair(ctx.prompter(tokenizer, record.question), answer),
            }

        examples = [pairs(record, "") for record in records[:n]]
        for example, record in zip(examples, records[n:], strict=False):
            example.update(pairs(record, "retain_"))
        return examples

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        student_logprobs, teacher_logprobs = [], []
        for prefix in ("", "retain_") if "retain_student" in batch else ("",):
            student, teacher = batch[f"{prefix}student"], batch[f"{prefix}teacher"]
            logits = _logits(model, student)
            teacher_logits = reference().logits(teacher)[:, :-1].float()
            rows, student_at, teacher_at = shared_answer_positions(
                student["labels"], teacher["labels"]
            )
            student_logprobs.append(F.log_softmax(logits[rows, student_at], dim=-1))
            teacher_logprobs.append(F.log_softmax(teacher_logits[rows, teacher_at], dim=-1))
        return F.kl_div(
            torch.cat(student_logprobs),
            torch.cat(teacher_logprobs),
            log_target=True,
            reduction="batchmean",
        )


def _logits(model, batch: Batch) -> torch.Tensor:
    """Shifted logits (position p predicts label p + 1) in float32."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return model(**inputs).logits[:, :-1].float()
