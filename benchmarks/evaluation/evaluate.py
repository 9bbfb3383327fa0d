"""Evaluate one model on every view with one generation pass and one scoring pass.

Every method is evaluated by this code, the target model too, so the before/after numbers of a
run and the numbers of different methods are comparable.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.data.split import PARAPHRASED, SPLIT_VIEWS, paraphrases_in, parse_view, records_in
from benchmarks.evaluation import metrics
from benchmarks.evaluation.generation import answer_logprobs, generate
from benchmarks.evaluation.leak import LeakTest
from benchmarks.prompting import Prompter

#: Every view ``eval.views`` may name: ``forget`` (the forget questions), each split view whole
#: (``forget_paraphrased``: the forget questions' paraphrases; the others: the records of that
#: role) and its dev and test halves (benchmarks/data/split.py), and TOFU's two general sets.
EVAL_VIEWS = (
    "forget",
    *(f"{view}{half}" for view in SPLIT_VIEWS for half in ("", "_dev", "_test")),
    "real_authors",
    "world_facts",
)
#: Per-question metrics ``eval.metrics`` selects; each view's mean is reported under the same name.
#: ``truth_preference`` also writes each row's raw truth ratio (``truth_ratio_R``) and TOFU's
#: normalised answer probability (``answer_prob_normalised``), which the suite's TOFU family reads.
METRICS = ("rougeL_recall", "answer_prob", "leak_rate", "truth_preference")
#: Metric names an older config may still hold, and what they are called now.
RENAMED = {"truth_ratio": "truth_preference"}


@dataclass(frozen=True)
class EvalItem:
    """A question as asked in one view (a paraphrase is its own item)."""

    view: str
    record: QARecord
    question: str


def eval_items(data: UnlearningData, views: tuple[str, ...] = EVAL_VIEWS) -> list[EvalItem]:
    """The questions each view asks; a ``_dev`` / ``_test`` view asks its half of the base view."""
    items = []
    for view in views:
        base, part = parse_view(view)
        if base == PARAPHRASED:
            items += [
                EvalItem(view, r, p)
                for r in data.forget
                for p in (r.paraphrases if part is None else paraphrases_in(r, part))
            ]
        else:
            records = data.with_role(base)
            chosen = records if part is None else records_in(records, part)
            items += [EvalItem(view, r, r.question) for r in chosen]
    return items


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: UnlearningData,
    eval_cfg: Any,
    prompter: Prompter,
    label: str,
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Metrics per view (means) and one row per question asked, for the results file."""
    wanted = set(eval_cfg.metrics)
    unknown = wanted - set(METRICS)
    if unknown:
        renamed = "".join(
            f" ({old} is now {RENAMED[old]})" for old in sorted(unknown & set(RENAMED))
        )
        raise ValueError(
            f"eval.metrics has unknown {sorted(unknown)}; choose from {list(METRICS)}{renamed}"
        )
    items = eval_items(data, tuple(eval_cfg.views))
    prompts = [prompter(tokenizer, item.question) for item in items]
    rows: list[dict[str, Any]] = [
        {
            "model": label,
            "view": i.view,
            "id": i.record.id,
            "question": i.question,
            "answer": i.record.answer,
        }
        for i in items
    ]

    if wanted & {"rougeL_recall", "leak_rate"}:
        generations = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=eval_cfg.max_new_tokens,
            batch_size=eval_cfg.batch_size,
            desc=f"eval {label}: generate",
        )
        texts = [g[0] for g in generations]
        leaks = LeakTest.from_config(eval_cfg.leak).leaks([i.record.answer for i in items], texts)
        for row, text, leak in zip(rows, texts, leaks, strict=True):
            row["generation"] = text
            row["rougeL_recall"] = metrics.rougeL_recall(row["answer"], text)
            row["leak_rate"] = float(leak)

    if wanted & {"answer_prob", "truth_preference"}:
        _score_answers(model, tokenizer, items, prompts, rows, eval_cfg, label, wanted)

    return _means(rows, wanted), rows


def _score_answers(model, tokenizer, items, prompts, rows, eval_cfg, label, wanted) -> None:
    """One scoring pass over every (prompt, answer) pair the probability metrics need: the
    answer, and for the truth ratio the paraphrased answer (where the record has one) and the
    perturbed answers."""
    pairs: list[tuple[int, str, str]] = []
    for index, item in enumerate(items):
        record = item.record
        pairs.append((index, "answer", record.answer))
        if "truth_preference" in wanted and record.perturbed_answers:
            if record.paraphrased_answer is not None:
                pairs.append((index, "paraphrased", record.paraphrased_answer))
            pairs += [(index, "perturbed", wrong) for wrong in record.perturbed_answers]
    scores = answer_logprobs(
        model,
        tokenizer,
        [prompts[i] for i, _, _ in pairs],
        [answer for *_, answer in pairs],
        batch_size=eval_cfg.batch_size,
        desc=f"eval {label}: score",
    )
    by_item: dict[int, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for (index, kind, _), score in zip(pairs, scores, strict=True):
        by_item[index][kind].append(score)
    for index, scored in by_item.items():
        rows[index].update(score_row(scored))


def score_row(scored: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """A question's probability metrics from its answers' token log-probs by kind: ``answer``
    (one), ``paraphrased`` (none or one) and ``perturbed`` (none or several).

    ``answer_prob`` is P(answer)^(1/|answer|); with perturbed answers, ``truth_ratio_R`` is TOFU's
    truth ratio with the paraphrased answer as its base (the answer where there is none),
    ``truth_preference`` its max(0, 1 − R), and ``answer_prob_normalised`` TOFU's probability on
    real authors and world facts, P(answer)/(P(answer) + Σ P(perturbed)), length-normalised."""
    (answer,) = scored["answer"]
    result = {"answer_prob": metrics.answer_prob(answer)}
    perturbed = scored.get("perturbed", [])
    if perturbed:
        base = scored.get("paraphrased", [answer])[0]
        ratio = metrics.truth_ratio(base, perturbed)
        result["truth_ratio_R"] = ratio
        result["truth_preference"] = metrics.truth_preference(ratio)
        result["answer_prob_normalised"] = metrics.multiple_choice(answer, perturbed)[1]
    return result


def _means(rows: list[dict[str, Any]], wanted: set[str]) -> dict[str, dict[str, float]]:
    by_view: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for metric in METRICS:
            if metric in wanted and metric in row:
                by_view[row["view"]][metric].append(row[metric])
    return {
        view: {metric: float(np.mean(values)) for metric, values in per_metric.items()}
        for view, per_metric in by_view.items()
    }
