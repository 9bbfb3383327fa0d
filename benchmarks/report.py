"""The short table a job prints: split × metric, target → unlearned."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def summary_table(results: dict[str, Any]) -> str:
    target = results["metrics"]["target"]
    unlearned = results["metrics"]["unlearned"]
    metrics = sorted({m for split in target.values() for m in split})
    rows = [
        [split, *(_arrow(target[split].get(m), unlearned.get(split, {}).get(m)) for m in metrics)]
        for split in target
    ]
    return tabulate(rows, headers=["split (target → unlearned)", *metrics], tablefmt="github")


def _arrow(before: float | None, after: float | None) -> str:
    return " → ".join("—" if v is None else f"{v:.3f}" for v in (before, after))


def print_summary(results: dict[str, Any]) -> None:
    name = f"{results['method']} (seed {results['seed']})"
    if results["status"] != "ok":
        print(f"\n{name}: FAILED — {results.get('error')}")
        return
    print(f"\n{name} on {results['data']['name']}:\n{summary_table(results)}")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in results["timings_s"].items())
    print(f"time: {timings}")
