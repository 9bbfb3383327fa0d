"""The sanity check (``python -m benchmarks.sanity``): its relations on hand-made numbers, and the
whole check on the fluent tiny model (fine-tuned on the embedded data as the target) and, slow, on
the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fluent import ANCHORS

from benchmarks import sanity
from benchmarks.sanity import EXPECTED, MODELS, Expect, check

#: The fluent tiny model as the base, a target that learns the facts in seconds, short answers.
TINY_SANITY = (
    "model=hub",
    "tracking=none",
    f"eval.judge.fluency_anchors={ANCHORS}",
    "data.n_retain=4",
    "data.n_general_retain=4",
    "eval.leak.use_embedding=false",
    "eval.max_new_tokens=12",
    "target.train.lr=1e-2",
    "target.train.epochs=30",
)


def test_relations_compare_models_the_best_of_several_and_numbers() -> None:
    measured = {
        "target": {"m": 0.9, "auc": 1.0},
        "base": {"m": 0.5, "auc": 0.5},
        "constant": {"m": 0.5},
    }
    expected = [
        Expect("m", "base", "<", "target", ""),
        Expect("m", "constant", "<", ("base", "target"), ""),  # below the best of them
        Expect("m", "constant", "<", "base", ""),  # a tie is a misranking
        Expect("m", "target", ">", 0.95, ""),
        Expect("auc", "constant", "<", 0.8, ""),  # not measured
        Expect("auc", "base", "<", 0.8, ""),
    ]
    verdicts = check(measured, {"au": "no holdout"}, expected)
    assert [v.ok for v in verdicts] == [True, True, False, False, None, True]
    assert (verdicts[1].left, verdicts[1].right) == (0.5, 0.9)
    assert verdicts[4].note == "no holdout"
    assert verdicts[1].relation == "constant < best of (base, target)"


def test_every_expected_relation_names_known_models() -> None:
    for expect in EXPECTED:
        names = expect.right if isinstance(expect.right, tuple) else (expect.right,)
        assert {expect.left, *(n for n in names if isinstance(n, str))} <= set(MODELS), expect
        assert expect.op in ("<", ">") and expect.why


def test_the_sanity_check_on_the_tiny_model(
    fluent_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Every relation holds on the fluent tiny model; a relation that contradicts its metric's
    definition (added here) is reported as misranked and fails the command."""
    wrong = Expect("forget/rougeL_recall", "target", "<", "base", "wrong on purpose")
    monkeypatch.setattr(sanity, "EXPECTED", (*EXPECTED, wrong))
    out = tmp_path / "sanity.json"
    code = sanity.main(["--out", str(out), *TINY_SANITY, f"model.name_or_path={fluent_dir}"])
    record = json.loads(out.read_text())
    verdicts = {(c["metric"], c["relation"]): c for c in record["checks"]}
    misranked = [key for key, c in verdicts.items() if c["ok"] is False]
    assert misranked == [("forget/rougeL_recall", "target < base")], record["checks"]
    assert all(c["ok"] is not None for c in record["checks"]), record["not_measured"]
    assert code == 1 and record["ok"] is False
    assert set(record["models"]) == set(MODELS)
    printed = capsys.readouterr().out
    assert "MISRANKED" in printed and f"{len(EXPECTED)} relations hold, 1 misranked" in printed


def test_the_sanity_check_refuses_a_target_that_is_the_base_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = sanity.main(["--out", str(tmp_path / "s.json"), "model=tiny_random", "target=base"])
    assert code == 2 and "target=finetune" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_the_sanity_check_on_the_embedded_model(tmp_path: Path) -> None:
    """The real model, few questions (minutes on a CPU): every relation holds and is measured."""
    out = tmp_path / "sanity.json"
    code = sanity.main(
        [
            "--out",
            str(out),
            "tracking=none",
            "data.forget_set=forget_1",
            "data.n_retain=4",
            "data.n_general_retain=4",
            "eval.max_new_tokens=24",
        ]
    )
    record = json.loads(out.read_text())
    assert code == 0, [c for c in record["checks"] if not c["ok"]]
    assert all(c["ok"] for c in record["checks"]), record["not_measured"]
