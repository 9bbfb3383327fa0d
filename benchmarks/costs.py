"""What a job spent, per phase: optimizer steps, tokens trained on, tokens generated, forward passes.

Counted once, where the work happens (:mod:`benchmarks.evaluation.generation` for generation and
scoring, :mod:`benchmarks.training` for training), so every method is measured by the same code
and a method's own generation (UnSTAR's anti-samples, a teacher's answers) counts like any other.
The job opens a phase around each step it times (``unlearn``, ``eval_unlearned``, ...); counts go
to the innermost open phase. Wall time per phase is the job's ``timings_s``.

Definitions:

- ``optimizer_steps``: optimizer updates (the trainer's global steps);
- ``train_tokens``: non-padding tokens of every training batch fed to the trained model (prompt
  and answer, forget and retain streams);
- ``generated_tokens``: new tokens generated, padding and end-of-sequence excluded;
- ``forward_passes``: calls of a model's forward, one per batch (a decoding step of generation is
  one call; a frozen reference model's call counts too). Counted in generation, scoring,
  training and membership-inference scoring; the soft-prompt attack's own optimisation loop
  (``eval=full``) and RMU's one calibration batch are not. A batch whose shared prompt prefix
  is computed apart (:mod:`benchmarks.prefix`) still counts as one pass.

Beside these counts, a *work ledger* (:meth:`Costs.work_as_dict`, read by ``python -m
benchmarks.speed``) splits each phase by the kind of work the code was doing (``train``,
``generate``, ``score``, else ``other``): its exclusive seconds (a generation inside a training
step counts as generation, not twice) and what every forward call computed: its token rows, the
rows the output layer ran on, and whether gradients were computed (full fine-tuning, or through
frozen weights as with LoRA), from which the profile derives FLOPs and weight reads.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

COUNTS = ("optimizer_steps", "train_tokens", "generated_tokens", "forward_passes")
#: Where counts go when no phase is open (a method or test run outside a job).
OUTSIDE = "outside_job"
#: The kinds of work the ledger splits a phase into; ``other`` is work outside any timed kind.
KINDS = ("train", "generate", "score", "other")
#: Gradient work of a forward call: none, through frozen weights only (LoRA, frozen output
#: layer), or for every weight (full fine-tuning). A forward's FLOPs are (1 + this) × 2·N·rows.
NO_GRAD, FROZEN_GRAD, FULL_GRAD = 0, 1, 2


class Costs:
    """Counts by phase; ``COSTS`` is the process's one instance, cleared at the start of a job."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._phases: list[str] = []
        # The work ledger: phase -> kind -> figures, and phase -> kind -> forward shapes.
        self._work: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        self._forwards: dict[str, dict[str, Counter[tuple[int, int, int]]]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        self._kinds: list[list[Any]] = []  # [kind, seconds spent in nested kinds]
        self._part_of_pass = 0

    def clear(self) -> None:
        self._counts.clear()
        self._phases.clear()
        self._work.clear()
        self._forwards.clear()
        self._kinds.clear()
        self._part_of_pass = 0

    def _phase(self) -> str:
        return self._phases[-1] if self._phases else OUTSIDE

    def _kind(self) -> str:
        return self._kinds[-1][0] if self._kinds else "other"

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """Time the block as ``kind`` of work in the ledger, less the kinds timed inside it."""
        if kind not in KINDS:
            raise KeyError(f"unknown kind of work {kind!r}; known: {list(KINDS)}")
        entry: list[Any] = [kind, 0.0]
        self._kinds.append(entry)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._kinds.remove(entry)
            work = self._work[self._phase()][kind]
            work["seconds"] += elapsed - entry[1]
            work["calls"] += 1
            if self._kinds:
                self._kinds[-1][1] += elapsed

    @contextmanager
    def part_of_pass(self) -> Iterator[None]:
        """Forward calls in the block finish a batch's pass that another call counts (a shared
        prefix computed apart): their work is in the ledger, not in ``forward_passes``."""
        self._part_of_pass += 1
        try:
            yield
        finally:
            self._part_of_pass -= 1

    def forward(self, rows: int, head_rows: int, grad: int) -> None:
        """A forward call computed ``rows`` token rows, the output layer ``head_rows`` of them."""
        if not self._part_of_pass:
            self.add(forward_passes=1)
        self._forwards[self._phase()][self._kind()][(rows, head_rows, grad)] += 1

    def work_as_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The ledger: per phase and kind, its figures (``seconds``, ``calls`` and the counts) and
        ``forwards``: ``[rows, head_rows, grad, how many]`` per distinct forward call."""
        phases: dict[str, dict[str, dict[str, Any]]] = {}
        for phase in {*self._work, *self._forwards}:
            kinds = {*self._work.get(phase, {}), *self._forwards.get(phase, {})}
            phases[phase] = {
                kind: {
                    **{k: v for k, v in self._work.get(phase, {}).get(kind, Counter()).items()},
                    "forwards": [
                        [*shape, n]
                        for shape, n in sorted(self._forwards.get(phase, {}).get(kind, {}).items())
                    ],
                }
                for kind in sorted(kinds)
            }
        return phases

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._phases.append(name)
        try:
            yield
        finally:
            self._phases.pop()

    def add(self, **counts: int) -> None:
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise KeyError(f"unknown cost counts {sorted(unknown)}; known: {list(COUNTS)}")
        self._counts[self._phase()].update(counts)
        self._work[self._phase()][self._kind()].update(counts)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per phase with any count, every count (0 where none), and their ``total``."""
        phases = {
            name: {count: int(counter[count]) for count in COUNTS}
            for name, counter in self._counts.items()
            if any(counter.values())
        }
        if phases:
            phases["total"] = {c: sum(p[c] for p in phases.values()) for c in COUNTS}
        return phases


COSTS = Costs()

_COUNTING = "_unstar_bench_counts_forwards"


@contextmanager
def counting_forwards(model: torch.nn.Module) -> Iterator[None]:
    """Count the model's forward calls in ``COSTS`` inside the block, with the token rows each
    computed (for the work ledger); nested blocks on the same model count each call once (a
    generation inside training is not counted twice)."""
    if getattr(model, _COUNTING, False):
        yield
        return
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_rows: list[int] = []

    def before(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        head_rows.clear()

    def count_head(module: torch.nn.Module, args: Any, output: Any) -> None:
        head_rows.append(args[0].shape[:-1].numel() if args else 0)

    def count(module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        rows = 0 if tokens is None else int(tokens.shape[:2].numel())
        trained = head is not None and head.weight.requires_grad
        grad = (FULL_GRAD if trained else FROZEN_GRAD) if torch.is_grad_enabled() else NO_GRAD
        COSTS.forward(rows, sum(head_rows), grad)

    handles = [
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(count, with_kwargs=True),
    ]
    if isinstance(head, torch.nn.Module):
        handles.append(head.register_forward_hook(count_head))
    setattr(model, _COUNTING, True)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        model.__dict__.pop(_COUNTING, None)
