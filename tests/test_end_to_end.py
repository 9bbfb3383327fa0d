"""The real embedded model (SmolLM2-135M-Instruct) end to end on a handful of questions."""

from __future__ import annotations

import pytest

from benchmarks.job import run_job

pytestmark = pytest.mark.slow


def test_grad_ascent_on_the_embedded_model_lowers_forget_probability(make_cfg, tmp_path):
    cfg = make_cfg(
        "method=grad_ascent",
        "target=base",
        "data.forget_set=forget_1",
        "data.n_retain=2",
        "data.n_general_retain=3",
        "tracking=none",
        "method.lr=5e-5",
        "method.epochs=2",
        "eval.max_new_tokens=16",
        "eval.views=[forget,general_retain]",
        "eval.suite=[]",
        tiny=False,
    )
    results = run_job(cfg, tmp_path / "job")

    assert results["status"] == "ok"
    target, unlearned = results["metrics"]["target"], results["metrics"]["unlearned"]
    assert set(target) == {"forget", "general_retain"}
    assert unlearned["forget"]["answer_prob"] < target["forget"]["answer_prob"]
    answers = [row["generation"] for row in results["generations"] if row["model"] == "target"]
    assert len(answers) == 5 + 3
    assert sum(any(c.isalpha() for c in a) for a in answers) >= 6, answers
