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
from benchmarks.evaluation import specs
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
#: The per-question metrics ``eval.metrics`` may select: those of the metric spec registry
#: (:mod:`benchmarks.evaluation.specs`) that have a per-question function; each view's mean is
#: reported under the same name, beside the view's question count ``n``.
#: ``truth_preference`` also writes each row's raw truth ratio (``truth_ratio_R``) and TOFU's
#: normalised answer probability (``answer_prob_normalised``), which the suite's TOFU family reads.
METRICS = tuple(specs.row_metrics())
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
    """Metrics per view (means, and ``n``: the questions asked in the view) and one row per
    question asked, for the results file. Each selected metric's spec says what it needs: a
    generation pass, the leak test, a scoring pass."""
    known = specs.row_metrics()
    wanted = [name for name in known if name in set(eval_cfg.metrics)]
    unknown = set(eval_cfg.metrics) - set(known)
    if unknown:
        renamed = "".join(
            f" ({old} is now {RENAMED[old]})" for old in sorted(unknown & set(RENAMED))
        )
        raise ValueError(
            f"eval.metrics has unknown {sorted(unknown)}; choose from {known}{renamed}"
        )
    chosen = [specs.METRICS.get(name) for name in wanted]
    needs = set().union(*(spec.needs for spec in chosen))
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
    texts: list[str | None] = [None] * len(items)
    leaks: list[bool | None] = [None] * len(items)
    if needs & {"generation", "leak_test"}:
        generations = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=eval_cfg.max_new_tokens,
            batch_size=eval_cfg.batch_size,
            desc=f"eval {label}: generate",
        )
        texts = [g[0] for g in generations]
        for row, text in zip(rows, texts, strict=True):
            row["generation"] = text
    if "leak_test" in needs:
        leaks = list(
            LeakTest.from_config(eval_cfg.leak).leaks([i.record.answer for i in items], texts)
        )
    scored: list[dict[str, list[np.ndarray]]] = [{} for _ in items]
    if needs & {"token_scores", "perturbed_scores"}:
        scored = _score_answers(
            model, tokenizer, items, prompts, eval_cfg, label, "perturbed_scores" in needs
        )
    for row, item, text, leak, scores in zip(rows, items, texts, leaks, scored, strict=True):
        row.update(
            specs.row_values(wanted, specs.RowInputs(item.record.answer, text, leak, scores))
        )
    return view_means(rows, wanted), rows


def _score_answers(
    model, tokenizer, items, prompts, eval_cfg, label, perturbed: bool
) -> list[dict[str, list[np.ndarray]]]:
    """One scoring pass over every (prompt, answer) pair the probability metrics need: the
    answer, and with ``perturbed`` the paraphrased answer (where the record has one) and the
    perturbed answers. Each item's token log-probs by kind (``specs.RowInputs.scored``)."""
    pairs: list[tuple[int, str, str]] = []
    for index, item in enumerate(items):
        record = item.record
        pairs.append((index, "answer", record.answer))
        if perturbed and record.perturbed_answers:
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
    by_item: list[dict[str, list[np.ndarray]]] = [defaultdict(list) for _ in items]
    for (index, kind, _), score in zip(pairs, scores, strict=True):
        by_item[index][kind].append(score)
    return [dict(scored) for scored in by_item]


def score_row(scored: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """A question's probability metrics (``answer_prob``, ``truth_preference`` and the keys it
    adds) from its answers' token log-probs by kind, as ``evaluate_model`` computes them."""
    inputs = specs.RowInputs("", scored=scored)
    return specs.row_values(["answer_prob", "truth_preference"], inputs)


def view_means(rows: list[dict[str, Any]], wanted: list[str]) -> dict[str, dict[str, float]]:
    """Each view's mean of every wanted metric its rows have, and ``n``: the view's rows."""
    by_view: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_view[row["view"]].append(row)
    means: dict[str, dict[str, float]] = {}
    for view, chosen in by_view.items():
        means[view] = {"n": len(chosen)}
        for name in wanted:
            values = [row[name] for row in chosen if name in row]
            if values:
                means[view][name] = float(np.mean(values))
    return means
