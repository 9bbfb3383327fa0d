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
  (``eval=full``) and RMU's one calibration batch are not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

COUNTS = ("optimizer_steps", "train_tokens", "generated_tokens", "forward_passes")
#: Where counts go when no phase is open (a method or test run outside a job).
OUTSIDE = "outside_job"


class Costs:
    """Counts by phase; ``COSTS`` is the process's one instance, cleared at the start of a job."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._phases: list[str] = []

    def clear(self) -> None:
        self._counts.clear()
        self._phases.clear()

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
        self._counts[self._phases[-1] if self._phases else OUTSIDE].update(counts)

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
    """Count the model's forward calls in ``COSTS`` inside the block; nested blocks on the same
    model count each call once (a generation inside training is not counted twice)."""
    if getattr(model, _COUNTING, False):
        yield
        return

    def count(module: torch.nn.Module, args: Any, output: Any) -> None:
        COSTS.add(forward_passes=1)

    handle = model.register_forward_hook(count)
    setattr(model, _COUNTING, True)
    try:
        yield
    finally:
        handle.remove()
        model.__dict__.pop(_COUNTING, None)
