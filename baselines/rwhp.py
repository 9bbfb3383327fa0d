"""Revisiting Who's Harry Potter (RWHP, Liu et al. 2024, arXiv 2407.16997): WHP as a causal
intervention. The teacher is the frozen model's next-token distribution AVERAGED over N
counterfactual subjects, each under a prompt that names its counterfactual person, with the
substitute names "changed back" to the subject's; the student (the model on the original question)
is trained with KL(teacher ‖ student) on the answer tokens.

Sources (UCSB-NLP-Chang/causal_unlearn at cba1710, read; reference/unstar_and_wpu_protocol.md
§3.4) and what is ours:

* Counterfactual texts: the subject's full, first or last name is replaced by each of N names
  (``utils.replace_name``; here :func:`baselines.whp.rename`), in the question and the answer.
  RWHP takes the first N of 20 names listed per person (``data/replace_name_forget_100.json``);
  here N distinct names of ``counterfactual_names`` are drawn per subject with the job seed.
* Counterfactual prompt: RWHP prepends ``[INST] Complete the following passage about
  {replace_ent}. [/INST]`` to each renamed Wikipedia passage (``teacher.py``). *Ours:* our texts
  are QA turns, so the preamble (``counterfactual_prompt``, default "Answer the following question
  about {name}.") goes at the start of the user turn, before the renamed question; "" turns it off.
  RWHP gives the student the same preamble naming the real subject (``data_module.py``,
  ``add_instruction``); ``prompt_student: true`` does that, the default (false) trains the plain
  question the evaluation asks (*ours*: a QA question already names its subject).
* Average of probabilities, not of logits, over the N teachers, on the positions every teacher
  aligns (``teacher.py``: softmax per teacher, intersection of the matched indices, mean). The
  alignment is difflib on the answer tokens (:func:`baselines.whp.shared_answer_positions`).
* Change name back (``teacher.py``, ``move_probability_to_original_name``): where the
  counterfactual answer starts a substitute name, the teacher's prediction of it is aligned with the
  student's prediction of the subject's name, and the probability of every substitute name's first
  token is moved to the subject's token there, so the student keeps saying the subject's name and
  never learns a substitute. *Ours:* the moved tokens are the first tokens of all names drawn in
  the job (RWHP: of that teacher's own name; a batch does not say which row has which subject).
  *Not implemented:* RWHP's second rule, which also moves the mass where most teachers predict
  their substitute name (probability > 0.1) though the original text has no name there: its target
  is the subject's first token, which a batch row does not carry. Predictions of the tokens inside
  a renamed name exist in one text only and are skipped (as RWHP); the prediction of the token
  after a name is trained (as our WHP; RWHP with change_name_back skips it).
* Loss: KL(teacher ‖ student) summed over the vocabulary, averaged over the aligned answer tokens
  (RWHP ``dataloader.py``: per sequence, then over the batch; ours as our WHP). No retain term
  (``retain_strength: 0``), lr 1e-5, N = 20 in RWHP on WPU; N is 4 here (see
  conf/method/rwhp.yaml). On TOFU, whose data are QA like ours, RWHP used N = 1 and no
  counterfactual prompt (README, ``config/forget_tofu.yaml``); the defaults follow WPU's setting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from baselines.whp import first_token_ids, rename, shared_answer_positions
from benchmarks.config import ConfigError, MethodConfig, knob
from benchmarks.methods import METHODS, TrainingMethod
from benchmarks.training import Batch, Pair

#: The named pair each counterfactual subject's text gets in a forget example: cf0, cf1, ...
COUNTERFACTUAL = "cf"

#: One teacher's aligned positions: rows, student positions (into the shifted logits), and the
#: teacher's next-token probabilities there, one row per position.
Aligned = tuple[list[int], list[int], torch.Tensor]


@dataclass
class RWHPConfig(MethodConfig):
    n_counterfactuals: int = knob(help="counterfactual subjects per question (RWHP's N)", ge=1)
    counterfactual_names: list[str] = knob(help="pool the N names of each subject are drawn from")
    counterfactual_prompt: str = knob(help="preamble naming the person ({name}); '' for none")
    prompt_student: bool = knob(help="the student gets the preamble too, with the real subject")
    change_name_back: bool = knob(help="move the substitute names' probability to the subject's")


def name_starts(
    student_labels: torch.Tensor,
    teacher_labels: torch.Tensor,
    shared: tuple[list[int], list[int], list[int]],
) -> tuple[list[int], list[int], list[int]]:
    """Row, student and teacher position where a run of unshared answer tokens starts on both
    sides (a renamed name), from the alignment :func:`shared_answer_positions` returned."""
    student_first = (student_labels[:, 1:] != -100).int().argmax(-1).tolist()
    teacher_first = (teacher_labels[:, 1:] != -100).int().argmax(-1).tolist()
    previous = {row: (student_first[row] - 1, teacher_first[row] - 1) for row in set(shared[0])}
    rows, student_at, teacher_at = [], [], []
    for row, student, teacher in zip(*shared, strict=True):
        last_student, last_teacher = previous[row]
        if student > last_student + 1 and teacher > last_teacher + 1:
            rows.append(row)
            student_at.append(last_student + 1)
            teacher_at.append(last_teacher + 1)
        previous[row] = (student, teacher)
    return rows, student_at, teacher_at


def change_name_back(
    probs: torch.Tensor, targets: torch.Tensor, name_ids: list[int]
) -> torch.Tensor:
    """Move each row's probability of the substitute names' tokens onto its target token (the
    subject's), as RWHP's ``move_probability_to_original_name``; rows stay distributions."""
    if not len(targets) or not name_ids:
        return probs
    ids = torch.tensor(name_ids, device=probs.device)
    names = probs[:, ids]
    own = ids.unsqueeze(0) == targets.unsqueeze(1)  # a target that is a name token keeps its mass
    moved = names.masked_fill(own, 0.0)
    rows = torch.arange(len(probs), device=probs.device)
    probs = probs.index_put((rows.unsqueeze(1), ids.unsqueeze(0)), names - moved)
    probs[rows, targets] += moved.sum(-1)
    return probs


@METHODS.register("rwhp")
class RWHP(TrainingMethod):
    config_class = RWHPConfig
    search_space: ClassVar[dict[str, str]] = {
        "method.lr": "tag(log, interval(1e-6, 1e-4))",
        "method.epochs": "range(1, 10)",
        "method.n_counterfactuals": "range(1, 8)",
    }

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.name_token_ids: list[int] = []  # set with the pairs, once the names are drawn

    def counterfactual_names(self, subjects: list[str], seed: int) -> dict[str, list[str]]:
        """N distinct names per subject (never the subject itself), drawn with the job seed."""
        n = self.cfg.n_counterfactuals
        rng = random.Random(seed)
        drawn = {}
        for subject in sorted(subjects):
            pool = [name for name in self.cfg.counterfactual_names if name != subject]
            if len(set(pool)) < n:
                raise ConfigError(
                    f"method.n_counterfactuals={n} but method.counterfactual_names has only "
                    f"{len(set(pool))} distinct names other than {subject!r}; add names or lower N"
                )
            drawn[subject] = rng.sample(sorted(set(pool)), n)
        return drawn

    def preamble(self, name: str, question: str) -> str:
        template = self.cfg.counterfactual_prompt
        return f"{template.format(name=name)}\n\n{question}" if template else question

    def forget_pairs(self, data, tokenizer, ctx) -> list[dict[str, Pair]]:
        data.require_subjects(self.cfg.name)
        drawn = self.counterfactual_names([record.subject for record in data.forget], ctx.seed)
        self.name_token_ids = first_token_ids(tokenizer, {n for ns in drawn.values() for n in ns})
        examples = []
        for record in data.forget:
            student = record.question
            if self.cfg.prompt_student:
                student = self.preamble(record.subject, student)
            example = {"original": Pair(ctx.prompter(tokenizer, student), record.answer)}
            for k, name in enumerate(drawn[record.subject]):
                question = rename(record.question, record.subject, name)
                example[f"{COUNTERFACTUAL}{k}"] = Pair(
                    ctx.prompter(tokenizer, self.preamble(name, question)),
                    rename(record.answer, record.subject, name),
                )
            examples.append(example)
        return examples

    def teacher(self, original: Batch, counterfactual: Batch, reference) -> Aligned:
        """One counterfactual subject's next-token probabilities where they align with the
        original answer, names changed back."""
        logits = reference().logits(counterfactual)[:, :-1].float()
        labels = original["labels"], counterfactual["labels"]
        shared = shared_answer_positions(*labels)
        rows, student_at, teacher_at = (list(part) for part in shared)
        probs = F.softmax(logits[rows, teacher_at], dim=-1)
        if not self.cfg.change_name_back:
            return rows, student_at, probs
        # Where the counterfactual answer starts a substitute name, align its prediction with the
        # student's prediction of the subject's name, and change the name back.
        names = set(self.name_token_ids)
        starts = [
            (row, student, teacher)
            for row, student, teacher in zip(*name_starts(*labels, shared), strict=True)
            if counterfactual["labels"][row, teacher + 1].item() in names
        ]
        if not starts:
            return rows, student_at, probs
        start_rows, start_student, start_teacher = (
            list(part) for part in zip(*starts, strict=True)
        )
        subjects = original["labels"][start_rows, [at + 1 for at in start_student]]
        back = F.softmax(logits[start_rows, start_teacher], dim=-1)
        back = change_name_back(back, subjects, self.name_token_ids)
        return rows + start_rows, student_at + start_student, torch.cat([probs, back])

    def average_teacher(self, batch: dict[str, Batch], reference) -> Aligned:
        """The mean of the counterfactual teachers' probabilities, on the student positions that
        every teacher aligns."""
        names = sorted((k for k in batch if k.startswith(COUNTERFACTUAL)), key=lambda k: int(k[2:]))
        teachers = [self.teacher(batch["original"], batch[name], reference) for name in names]
        indexed = [dict(zip(zip(rows, at, strict=True), range(len(rows)), strict=True))
                   for rows, at, _ in teachers]  # fmt: skip
        common = sorted(set.intersection(*(set(index) for index in indexed)))
        vocab = teachers[0][2].shape[-1]
        if not common:
            return [], [], torch.zeros(0, vocab)
        probs = torch.stack(
            [
                t[2][[index[key] for key in common]]
                for t, index in zip(teachers, indexed, strict=True)
            ]
        ).mean(0)
        return [row for row, _ in common], [at for _, at in common], probs

    def forget_loss(self, model, batch, reference) -> torch.Tensor:
        original = batch["original"]
        inputs = {"input_ids": original["input_ids"], "attention_mask": original["attention_mask"]}
        student = model(**inputs).logits[:, :-1].float()
        rows, student_at, teacher_probs = self.average_teacher(batch, reference)
        if not rows:
            return student.sum() * 0.0  # nothing aligned: no signal, but a graph for backward
        student_logprobs = F.log_softmax(student[rows, student_at], dim=-1)
        teacher_probs = teacher_probs.to(student_logprobs.device)
        kl = torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_logprobs
        return kl.sum(-1).mean()
