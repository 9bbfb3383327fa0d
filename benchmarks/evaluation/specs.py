"""The metric spec registry: every metric the harness reports, what it needs, how it is aggregated
and which direction is better; and the five WPU criteria as harmonic means of named sub-metrics.

One place decides these: ``evaluate_model`` computes the per-question metrics registered here
(and their view means), the suite's criteria family and ``analysis`` read the criteria and the
directions from here, so a table never re-derives a criterion or guesses which way is better.

Adding a per-question metric is one decorated function and its name in ``eval.metrics``::

    @metric("answer_length", needs={"generation"}, higher_is_better=None, short="length")
    def answer_length(row: RowInputs) -> float:
        return float(len(row.generation.split()))

Metrics the suite computes from many questions at once (forget quality, MIA AUC, privleak, the
worst-case leak) are declared with :func:`declare` so that their direction and range are known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from benchmarks.data.split import reported
from benchmarks.evaluation import metrics
from benchmarks.registry import Registry

#: What a metric may need. ``generation``: the greedy answer; ``leak_test``: the leak test's
#: verdict on it; ``token_scores``: the answer's token log-probs; ``perturbed_scores``: those of
#: the paraphrased and perturbed answers too; ``reference_model``: the retain-only model;
#: ``judge``: the configured judge; ``holdout``: questions the target never saw.
NEEDS = frozenset(
    {"generation", "leak_test", "token_scores", "perturbed_scores", "reference_model", "judge",
     "holdout"}
)  # fmt: skip


#: What ``evaluate_model`` gives a per-question metric.
ROW_NEEDS = frozenset({"generation", "leak_test", "token_scores", "perturbed_scores"})


@dataclass(frozen=True)
class RowInputs:
    """What a per-question metric reads: the gold answer, the greedy generation and the leak
    test's verdict (when it needs them), and token log-probs by kind: ``answer`` (one),
    ``paraphrased`` (none or one), ``perturbed`` (none or several)."""

    answer: str
    generation: str | None = None
    leak: bool | None = None
    scored: Mapping[str, Sequence[np.ndarray]] = field(default_factory=dict)


#: A per-question metric: its value, or a dict of its value (under its own name) and extra row
#: keys other metrics read, or None where it does not apply to the question.
RowMetric = Callable[[RowInputs], "float | dict[str, float] | None"]


@dataclass(frozen=True)
class MetricSpec:
    """A reported metric. ``higher_is_better`` None: neither (privleak is best near 0);
    ``range``: its bounds where they are known (analysis turns a lower-is-better metric with a
    range into ``high − value`` before comparing methods). ``row``: the per-question function of
    a metric ``evaluate_model`` computes (its view mean is reported under the same name); None for
    one the suite computes. ``column``: where analysis finds the unlearned model's value (``{view}``
    filled with each of ``headline_views``); ``compared_as``: the name it is set relative to the
    best under, beside the criteria (empty: not compared)."""

    name: str
    needs: frozenset[str]
    aggregation: str
    higher_is_better: bool | None
    range: tuple[float, float] | None = None
    short: str = ""
    row: RowMetric | None = None
    column: str = "unlearned/{view}/{name}"
    headline_views: tuple[str, ...] = ()
    compared_as: str = ""

    def __post_init__(self) -> None:
        unknown = self.needs - NEEDS
        if unknown:
            raise ValueError(
                f"metric {self.name!r} needs unknown {sorted(unknown)}; known: {sorted(NEEDS)}"
            )

    def columns(self) -> dict[str, str]:
        """Analysis columns (stem → header) of the headline views, or of the one column."""
        label = self.short or self.name
        if "{view}" not in self.column:
            return {self.column.format(name=self.name): label}
        return {
            self.column.format(view=view, name=self.name): f"{view.replace('_', '-')} {label}"
            for view in self.headline_views
        }


METRICS: Registry[MetricSpec] = Registry("metric")


def metric(
    name: str,
    *,
    needs: Iterable[str],
    higher_is_better: bool | None,
    range: tuple[float, float] | None = None,
    short: str = "",
    headline_views: tuple[str, ...] = (),
    aggregation: str = "mean over a view's questions",
) -> Callable[[RowMetric], RowMetric]:
    """Register a per-question metric; ``evaluate_model`` reports its mean per view."""
    beyond = set(needs) - ROW_NEEDS
    if beyond:
        raise ValueError(
            f"per-question metric {name!r} needs {sorted(beyond)}, which evaluate_model does not "
            f"provide (only {sorted(ROW_NEEDS)}); compute it in a suite family and declare() it"
        )

    def add(row: RowMetric) -> RowMetric:
        spec = MetricSpec(
            name, frozenset(needs), aggregation, higher_is_better, range, short, row,
            headline_views=headline_views,
        )  # fmt: skip
        METRICS.register(name)(spec)
        return row

    return add


def declare(spec: MetricSpec) -> MetricSpec:
    """Register a metric the suite computes over many questions (no per-question function)."""
    return METRICS.register(spec.name)(spec)


@contextmanager
def registered_metric(spec: MetricSpec) -> Iterator[MetricSpec]:
    """A metric registered for the duration of a block (a test's, or a one-off study's)."""
    METRICS.register(spec.name)(spec)
    try:
        yield spec
    finally:
        METRICS.unregister(spec.name)


def row_metrics() -> list[str]:
    """The per-question metrics ``eval.metrics`` may select."""
    return [name for name, spec in METRICS.items() if spec.row is not None]


def row_values(names: Iterable[str], inputs: RowInputs) -> dict[str, float]:
    """One question's values of the named per-question metrics (and the keys they add)."""
    values: dict[str, float] = {}
    for name in names:
        value = METRICS.get(name).row(inputs)
        if isinstance(value, dict):
            values.update(value)
        elif value is not None:
            values[name] = float(value)
    return values


def oriented(spec: MetricSpec, value: float) -> float:
    """The value turned so that higher is better and a share of the best means something: as is,
    ``high − value`` for a lower-is-better metric with a range, else ``1 / value`` (so that the
    share of the best is best / value)."""
    if spec.higher_is_better is None:
        raise ValueError(f"metric {spec.name!r} has no better direction; it cannot be ranked")
    if spec.higher_is_better:
        return value
    if spec.range:
        return spec.range[1] - value
    return 1 / value if value else math.inf


# -- per-question metrics -----------------------------------------------------------------------


@metric(
    "rougeL_recall", needs={"generation"}, higher_is_better=None, range=(0.0, 1.0),
    short="rougeL", headline_views=(
        "forget", "hard_retain_test", "answer_sharing_retain_test", "general_retain_test",
        "hard_retain", "answer_sharing_retain", "general_retain",
    ),
)  # fmt: skip
def rougeL_recall(row: RowInputs) -> float:
    """ROUGE-L recall of the gold answer in the generation: lower is better on forgotten views,
    higher on kept ones, so it has no one direction."""
    return metrics.rougeL_recall(row.answer, row.generation or "")


@metric(
    "leak_rate", needs={"generation", "leak_test"}, higher_is_better=None, range=(0.0, 1.0),
    short="leak", headline_views=("forget", "forget_paraphrased_test", "forget_paraphrased"),
)  # fmt: skip
def leak_rate(row: RowInputs) -> float:
    """Whether the generation states the gold answer (the leak test's verdict)."""
    return float(bool(row.leak))


@metric("answer_prob", needs={"token_scores"}, higher_is_better=None, range=(0.0, 1.0))
def answer_prob(row: RowInputs) -> float:
    """P(answer)^(1/|answer|)."""
    (answer,) = row.scored["answer"]
    return metrics.answer_prob(answer)


@metric(
    "truth_preference", needs={"token_scores", "perturbed_scores"}, higher_is_better=None,
    range=(0.0, 1.0),
)  # fmt: skip
def truth_preference(row: RowInputs) -> dict[str, float] | None:
    """TOFU's max(0, 1 − R) with R the truth ratio on the paraphrased answer (the answer where
    there is none); the row also gets ``truth_ratio_R`` and TOFU's normalised probability
    ``answer_prob_normalised``, which the TOFU family reads. None without perturbed answers."""
    perturbed = row.scored.get("perturbed", [])
    if not perturbed:
        return None
    (answer,) = row.scored["answer"]
    base = row.scored.get("paraphrased", [answer])[0]
    ratio = metrics.truth_ratio(base, perturbed)
    return {
        "truth_preference": metrics.truth_preference(ratio),
        "truth_ratio_R": ratio,
        "answer_prob_normalised": metrics.multiple_choice(answer, perturbed)[1],
    }


# -- metrics the suite computes -----------------------------------------------------------------

declare(MetricSpec(
    "forget_quality", frozenset({"token_scores", "perturbed_scores", "reference_model"}),
    "KS-test p-value of the forget truth ratios against the retain-only model's",
    higher_is_better=True, range=(0.0, 1.0), short="forget quality",
    column="tofu/unlearned/forget_quality",
))  # fmt: skip
declare(MetricSpec(
    "forget_truth_ratio", frozenset({"token_scores", "perturbed_scores"}),
    "mean min(R, 1/R) over a forgotten view's questions", higher_is_better=True,
    range=(0.0, 1.0), short="forget truth ratio",
    column="tofu/unlearned/forget_truth_ratio/forget",
))  # fmt: skip
declare(MetricSpec(
    "tofu_model_utility", frozenset({"generation", "token_scores", "perturbed_scores"}),
    "harmonic mean of TOFU's 9 values (or of 3 per kept view on other data)",
    higher_is_better=True, range=(0.0, 1.0), short="TOFU utility",
    column="tofu/unlearned/model_utility",
))  # fmt: skip
declare(MetricSpec(
    "mia_auc", frozenset({"token_scores", "holdout"}),
    "ROC-AUC of holdout vs forget questions by each MIA score; 0.5: forget looks unseen",
    higher_is_better=None, range=(0.0, 1.0), short="min-k AUC",
    column="privacy/unlearned/auc/min_k",
))  # fmt: skip
declare(MetricSpec(
    "privleak", frozenset({"token_scores", "holdout", "reference_model"}),
    "relative AUC gap to the retain-only model, in %; 0 ideal, −100 at worst (the forget set "
    "fully told apart), unbounded above (over-unlearning)", higher_is_better=None,
    short="min-k privleak",
    column="privacy/unlearned/privleak/min_k",
))  # fmt: skip
declare(MetricSpec(
    "worst_case_leak", frozenset({"generation", "leak_test"}),
    "the highest forget leak rate of greedy decoding and every attack that ran",
    higher_is_better=False, range=(0.0, 1.0), short="worst-case leak",
    column="robustness/unlearned/worst_case_leak", compared_as="worst_case_robustness",
))  # fmt: skip


# -- the five WPU criteria ----------------------------------------------------------------------


@dataclass(frozen=True)
class SubMetric:
    """A criterion's input: the mean of row key ``key`` over view ``view`` (``1 − mean`` with
    ``complement``). ``{attack}`` in ``name`` and ``view`` is filled with each attack that ran.
    ``if_present``: dropped (not missing) when the evaluation has no rows of the view, so the
    criterion is over the views the data has; a dropped one is named in the results."""

    name: str
    view: str
    key: str
    complement: bool = False
    if_present: bool = False


@dataclass(frozen=True)
class CriterionSpec:
    """A WPU criterion: the harmonic mean of its sub-metrics, raw in [0, 1], higher better."""

    name: str
    short: str
    submetrics: tuple[SubMetric, ...]
    aggregation: str = "harmonic mean of the sub-metrics"
    higher_is_better: bool = True
    range: tuple[float, float] = (0.0, 1.0)


CRITERIA_SPECS: Registry[CriterionSpec] = Registry("criterion")


def criterion(spec: CriterionSpec) -> CriterionSpec:
    return CRITERIA_SPECS.register(spec.name)(spec)


# Grouping: reference/unstar_and_wpu_protocol.md §3.3.
criterion(CriterionSpec("unlearning_efficacy", "UE", (
    SubMetric("forget_1_minus_rougeL", "forget", "rougeL_recall", complement=True),
    SubMetric("forget_privacy", "forget", "judge_privacy"),
)))  # fmt: skip
criterion(CriterionSpec("model_utility", "MU", (
    SubMetric("hard_retain_rougeL_recall", "hard_retain", "rougeL_recall", if_present=True),
    SubMetric("general_retain_rougeL_recall", "general_retain", "rougeL_recall", if_present=True),
)))  # fmt: skip
criterion(CriterionSpec("response_quality", "RQ", (
    SubMetric("forget_response_quality", "forget", "judge_quality"),
    SubMetric("hard_retain_response_quality", "hard_retain", "judge_quality"),
)))  # fmt: skip
criterion(CriterionSpec("hallucination_avoidance", "HA", (
    SubMetric("forget_reject_rate", "forget", "judge_reject"),
)))  # fmt: skip
criterion(CriterionSpec("adversarial_robustness", "AR", (
    SubMetric("{attack}_privacy", "attack/{attack}", "judge_privacy"),
    SubMetric("{attack}_1_minus_rougeL", "attack/{attack}", "rougeL_recall", complement=True),
)))  # fmt: skip

#: The criteria in the paper's order.
CRITERIA = tuple(CRITERIA_SPECS.keys())


def harmonic_mean(values: Iterable[float | None]) -> float | None:
    """Harmonic mean, 0 if any value is 0; None if there are none or one is missing."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


#: ``lookup(view, key)``: the mean of a row key over a view, None where it is missing.
Lookup = Callable[[str, str], "float | None"]


def criteria_submetrics(
    lookup: Lookup, views: Iterable[str], attacks: Iterable[str]
) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:
    """Each criterion's named sub-metrics from view means (``views``: those the evaluation has
    rows of), and a note per criterion that dropped a sub-metric whose view is absent. A split
    view is read in its test half where that was evaluated, and the sub-metric's name says so
    (``hard_retain_test_rougeL_recall``): the criteria are reported numbers."""
    views, attacks = set(views), list(attacks)
    subs: dict[str, dict[str, float | None]] = {}
    notes: dict[str, str] = {}
    for name, spec in CRITERIA_SPECS.items():
        values: dict[str, float | None] = {}
        dropped: list[str] = []
        for sub in spec.submetrics:
            fills = attacks if "{attack}" in sub.view else [None]
            for attack in fills:
                view = reported(sub.view.format(attack=attack), views)
                label = sub.name.format(attack=attack).replace(sub.view, view, 1)
                if sub.if_present and view not in views:
                    dropped.append(view)
                    continue
                value = lookup(view, sub.key)
                values[label] = None if value is None else (1 - value if sub.complement else value)
        subs[name] = values
        if dropped:
            kept = sorted({s.view for s in spec.submetrics} - set(dropped))
            notes[name] = (
                f"over the views the data has: {', '.join(kept) or 'none'} "
                f"(no rows of {', '.join(dropped)})"
            )
    return subs, notes


def criteria_inputs() -> tuple[set[str], set[str]]:
    """What the criteria read from ``evaluate_model``: the views they need whatever the data (not
    the attacks', not those ``if_present``) and the per-question metrics among their keys (the
    rest are the judge's)."""
    subs = [sub for _, spec in CRITERIA_SPECS.items() for sub in spec.submetrics]
    views = {sub.view for sub in subs if "{attack}" not in sub.view and not sub.if_present}
    return views, {sub.key for sub in subs} & set(row_metrics())


def criteria(subs: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """The criteria: each one's aggregation (the harmonic mean) of its sub-metrics."""
    return {name: harmonic_mean(subs[name].values()) for name in CRITERIA}
