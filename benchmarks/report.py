"""The short report a job prints: view × metric with each view's question count n (and
n_unknown, its questions on facts the target does not know), what the target knows, the WPU
criteria, TOFU's metrics and the MIA AUCs and privleak with their intervals, target → unlearned.
It reports the test halves of the split views (benchmarks/data/split.py); their dev halves, which
selection reads, stay in results.json only."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from benchmarks.data.split import parse_view

#: Each view's question counts, before its metrics: ``n`` asked, ``n_unknown`` asking facts the
#: target does not know (benchmarks/target.py: left out of ``n`` with ``target.gate.known_only``).
COUNTS = ("n", "n_unknown")


def _value(value: float | None) -> str:
    if value is None:
        return "—"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _arrow(before: float | None, after: float | None) -> str:
    return " → ".join(_value(v) for v in (before, after))


def _interval(ci: dict[str, float] | None, digits: int) -> str:
    return "" if ci is None else f" [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def _table(
    target: dict[str, dict[str, float]], unlearned: dict[str, dict[str, float]], title: str
) -> str:
    counts = [c for c in COUNTS if any(c in row for row in target.values())]
    metrics = sorted({m for row in target.values() for m in row} - set(COUNTS))
    columns = [*counts, *metrics]
    rows = [
        [name, *(_arrow(values.get(c), unlearned.get(name, {}).get(c)) for c in columns)]
        for name, values in target.items()
    ]
    return tabulate(rows, headers=[f"{title} (target → unlearned)", *columns], tablefmt="github")


def summary_table(results: dict[str, Any]) -> str:
    """View × metric, without the dev halves (selection's, not a reported number)."""
    target = {v: m for v, m in results["metrics"]["target"].items() if parse_view(v)[1] != "dev"}
    return _table(target, results["metrics"]["unlearned"], "view")


def criteria_table(results: dict[str, Any]) -> str:
    criteria = results["criteria"]
    rows = [
        [name, _arrow(value, criteria["unlearned"].get(name))]
        for name, value in criteria["target"].items()
    ]
    table = tabulate(rows, headers=["WPU criterion (raw)", "target → unlearned"], tablefmt="github")
    notes = results.get("criteria_notes", {}).get("unlearned", {})
    return "\n".join([table, *(f"{name}: {note}" for name, note in notes.items())])


def privacy_table(results: dict[str, Any]) -> str:
    """Each MIA score's forget-vs-holdout AUC and privleak with their 95% bootstrap intervals
    (unlearned model), the question counts, and the warning when they are few."""
    target, unlearned = results["privacy"]["target"], results["privacy"]["unlearned"]
    if "auc" not in unlearned:
        return f"privacy: {unlearned.get('skipped', 'not measured')}"
    n = unlearned.get("n", {})
    rows = []
    for name, value in unlearned["auc"].items():
        auc_ci = unlearned.get("auc_ci", {}).get(name)
        leak = unlearned.get("privleak", {}).get(name)
        leak_ci = unlearned.get("privleak_ci", {}).get(name)
        rows.append(
            [
                name,
                _arrow(target.get("auc", {}).get(name), value) + _interval(auc_ci, 3),
                ("—" if leak is None else f"{leak:.1f}") + _interval(leak_ci, 1),
            ]
        )
    headers = [
        f"MIA (n = {n.get('forget', '—')} forget vs {n.get('holdout', '—')} holdout)",
        "AUC target → unlearned [95% CI]",
        "privleak % [95% CI]",
    ]
    table = tabulate(rows, headers=headers, tablefmt="github")
    warning = unlearned.get("warning")
    return f"{table}\n{warning}" if warning else table


def tofu_table(results: dict[str, Any]) -> str:
    """TOFU's forget truth ratio, forget quality (with its n) and model utility (with its kind),
    and forget quality's power warning where there is one."""
    target, unlearned = results["tofu"]["target"], results["tofu"]["unlearned"]
    n = unlearned.get("forget_quality_n") or {}
    rows = [
        [
            "forget_truth_ratio",
            _arrow(
                target["forget_truth_ratio"].get("forget"),
                unlearned["forget_truth_ratio"].get("forget"),
            ),
        ],
        [
            f"forget_quality (n = {n.get('unlearned', '—')} vs {n.get('reference', '—')})",
            _arrow(target["forget_quality"], unlearned["forget_quality"]),
        ],
        [
            f"model_utility ({unlearned['model_utility_kind']})",
            _arrow(target["model_utility"], unlearned["model_utility"]),
        ],
    ]
    table = tabulate(rows, headers=["TOFU", "target → unlearned"], tablefmt="github")
    warning = unlearned.get("forget_quality_warning")
    return f"{table}\n{warning}" if warning else table


def print_summary(results: dict[str, Any]) -> None:
    name = f"{results['method']} (seed {results['seed']})"
    if results.get("reused_from"):
        print(
            f"\n{name}: identical job finished before, results reused from {results['reused_from']}"
        )
    if results["status"] != "ok":
        print(f"\n{name}: FAILED — {results.get('error')}")
        return
    print(f"\n{name} on {results['data']['name']}:\n{summary_table(results)}")
    knowledge = _knowledge(results)
    if knowledge:
        print(knowledge)
    if results.get("criteria"):
        print(f"\n{criteria_table(results)}")
    if results.get("tofu"):
        print(f"\n{tofu_table(results)}")
    if results.get("privacy", {}).get("unlearned"):
        print(f"\n{privacy_table(results)}")
    phases = {k: v for k, v in results["timings_s"].items() if "/" not in k}
    suite = sum(v for k, v in results["timings_s"].items() if k.count("/") == 2 and ":" not in k)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
    print(f"\ntime: {timings}" + (f", eval suite {suite:.1f}s" if suite else ""))
    for line in (_stopping(results), _costs(results), _selection(results)):
        if line:
            print(line)


def _knowledge(results: dict[str, Any]) -> str:
    """What the target knows per split, after how many epochs, and the gate's warning."""
    target = results.get("target") or {}
    knowledge, gate = target.get("knowledge"), target.get("gate")
    if not knowledge:
        return ""
    known = ", ".join(f"{role} {s['known']}/{s['n']}" for role, s in knowledge["splits"].items())
    line = f"target knows: {known}"
    if gate:
        line += f" after {gate['epochs']:g} epochs (recipe {gate['recipe_epochs']:g})"
    if knowledge["unknown"]:
        how = "left out" if knowledge["known_only"] else "kept in the views"
        line += f"; {len(knowledge['unknown'])} unknown facts {how} (n_unknown)"
    warning = (gate or {}).get("warning")
    return f"{line}\nWARNING: {warning}" if warning else line


def _stopping(results: dict[str, Any]) -> str:
    stop = (results.get("method_metrics") or {}).get("stopping")
    if not stop:
        return ""
    how = "stopped early" if stop["stopped_early"] else "ran to the cap"
    return f"training: {stop['steps']} of {stop['cap']} steps, {how} (rule: {stop['rule']})"


def _costs(results: dict[str, Any]) -> str:
    spent = (results.get("costs") or {}).get("unlearn")
    if not spent:
        return ""
    return "unlearning cost: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in spent.items())


def _selection(results: dict[str, Any]) -> str:
    chosen = results.get("selection") or {}
    if chosen.get("objective") is None:
        return ""
    return (
        f"selection objective {chosen['objective']:.3f} (forget efficacy "
        f"{chosen['forget_efficacy']:.3f}, retain utility {chosen['retain_utility']:.3f}, "
        f"fluency {chosen['fluency']:.3f}; selection views only)"
    )
