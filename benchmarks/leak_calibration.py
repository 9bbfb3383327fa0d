"""Calibrate the leak test's embedding threshold on real wrong answers.

UnSTAR filters with an embedding threshold of 0.6; the evaluation (``conf/eval/default.yaml``)
uses a stricter one because a leak rate must not count plausible wrong answers ("French" for
"Italian") as leaks. This script measures both sides on WPU's model-generated wrong answers: how
many wrong answers each threshold calls leaks (false alarms), and how many correct answers
re-stated in a sentence it catches (should be all).

    python -m benchmarks.leak_calibration [--csv PATH]
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from benchmarks.evaluation.leak import LeakTest

DEFAULT_CSV = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "external"
    / "wpu_forget100_qa_with_wrong_answers.csv"
)
THRESHOLDS = (0.6, 0.7, 0.8, 0.9)
CHECKS = ("number", "keyword", "fuzzy", "embedding")


def read_pairs(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(gold per wrong answer, wrong answers, gold answers) from a question,answer,is_correct CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    gold = {r["question"]: r["answer"] for r in rows if r["is_correct"] == "True"}
    wrong = [r for r in rows if r["is_correct"] == "False" and r["question"] in gold]
    return [gold[r["question"]] for r in wrong], [r["answer"] for r in wrong], list(gold.values())


def calibrate(
    golds: Sequence[str],
    wrongs: Sequence[str],
    answers: Sequence[str],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[list[float]]:
    """Per threshold: % of wrong answers called leaks by each check and in all, % restated caught."""
    restated = [f"The answer is {a}." for a in answers]
    table = []
    for threshold in thresholds:
        test = LeakTest(embedding_threshold=threshold)
        counts = Counter(test.reasons(golds, wrongs))
        caught = sum(test.leaks(answers, restated))
        per_check = [100 * counts[c] / len(wrongs) for c in CHECKS]
        table.append([threshold, *per_check, sum(per_check), 100 * caught / len(answers)])
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="question,answer,is_correct")
    args = parser.parse_args(argv)
    golds, wrongs, answers = read_pairs(args.csv)
    print(f"{args.csv.name}: {len(wrongs)} wrong answers to {len(answers)} questions")
    headers = ["threshold", *(f"{c} %" for c in CHECKS), "wrong leak %", "restated caught %"]
    print(tabulate(calibrate(golds, wrongs, answers), headers=headers, floatfmt=".1f"))


if __name__ == "__main__":
    main()
