"""The evaluation suite on the tiny random model: a job with every family and attack reports every
key, a failing judge loses no results, the reference's forget quality against itself is 1, a
model that memorised the forget set is told from the holdout, and the attacks' mechanics."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from test_eval_judges import FakeJudgeServer

from benchmarks.data import load_data
from benchmarks.data.records import QARecord, UnlearningData
from benchmarks.evaluation import attacks as attacks_module
from benchmarks.evaluation import suite as suite_module
from benchmarks.evaluation.attacks import (
    ATTACKS,
    Victim,
    _embed,
    _frozen,
    _generate_with,
    _train_soft_prompt,
    fake_quantize,
    many_shot_prompt,
    quantized_copy,
)
from benchmarks.evaluation.criteria import CRITERIA
from benchmarks.evaluation.evaluate import evaluate_model
from benchmarks.evaluation.privacy import MIA_SCORES, auc
from benchmarks.evaluation.suite import (
    ModelRun,
    Suite,
    attacks_family,
    check_suite,
    criteria_family,
    echo_family,
    leak_summary,
    multiple_choice_family,
    outcomes_family,
    tofu_family,
    worst_case,
)
from benchmarks.job import run_job
from benchmarks.models import cache_dir, load_model
from benchmarks.prompting import Prompter, encode_pair, pad_encoded
from benchmarks.report import print_summary
from benchmarks.target import reference_results, retain_reference, taught
from benchmarks.training import mean_nll

#: Seconds, not minutes: two optimiser steps for the target and the method, tiny attacks.
QUICK = (
    "method=grad_ascent",
    "method.max_steps=2",
    "target.train.max_steps=2",
    "eval.attacks.many_shot.shots=4",
    "eval.attacks.leak_at_k.k=2",
    "eval.attacks.relearn.steps=2",
    "eval.attacks.relearn_related.steps=2",
)
FULL = (
    "eval=full",
    "data.forget_set=forget_facts",
    "eval.attacks.relearn.steps=2",
    "eval.attacks.relearn_related.steps=2",
    "eval.attacks.soft_prompt.steps=2",
    "eval.attacks.soft_prompt.tokens=2",
)


def test_a_job_with_the_full_suite_reports_every_family(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = run_job(make_cfg(*QUICK, *FULL), tmp_path / "job")
    assert results["status"] == "ok" and "eval_errors" not in results
    assert (
        json.loads((tmp_path / "job" / "results.json").read_text())["criteria"]
        == (results["criteria"])
    )
    attacks = [
        "paraphrase", "many_shot", "quantization", "leak_at_k", "relearn", "relearn_related",
        "soft_prompt",
    ]  # fmt: skip
    leak_keys = {"leak_rate", "attacked_leak_rate", "greedy_leak_rate", "rougeL_recall", "n"}
    for model in ("target", "unlearned"):
        assert tuple(results["criteria"][model]) == CRITERIA
        assert all(0.0 <= v <= 1.0 for v in results["criteria"][model].values())
        assert set(results["criteria_submetrics"][model]) == set(CRITERIA)
        assert list(results["attacks"][model]) == attacks
        for name, summary in results["attacks"][model].items():
            settings = {
                "quantization": {"8bit", "4bit"},
                "relearn_related": {"forget_facts_retained"},
            }
            settings = settings.get(name, set())
            assert set(summary) == leak_keys | settings and summary["n"] > 0
            assert all(set(summary[s]) == leak_keys for s in settings)
        robustness = results["robustness"][model]
        assert robustness["worst_case_leak"] == max(
            [s["leak_rate"] for s in results["attacks"][model].values()]
            + [results["metrics"][model]["forget"]["leak_rate"]]
        )
        tofu = results["tofu"][model]
        assert {"forget_truth_ratio", "forget_quality", "ks_statistic", "model_utility"} <= set(
            tofu
        )
        assert 0.0 <= tofu["forget_quality"] <= 1.0
        assert (
            tofu["model_utility_kind"] == "retain_views" and len(tofu["model_utility_values"]) == 6
        )
        assert tofu["forget_quality_n"] == {"unlearned": 4, "reference": 4}
        assert "4 vs 4 truth ratios" in tofu["forget_quality_warning"]
        privacy = results["privacy"][model]
        assert set(privacy["auc"]) == set(privacy["privleak"]) == set(MIA_SCORES.names())
        assert set(privacy["privleak_ci"]) == set(MIA_SCORES.names())
        counts = results["data"]["counts"]
        assert privacy["n"] == {"forget": counts["forget"], "holdout": counts["holdout"]}
        for name, value in privacy["auc"].items():
            assert privacy["auc_ci"][name]["low"] <= value <= privacy["auc_ci"][name]["high"]
        assert f"{counts['forget']} forget vs 10 holdout" in privacy["warning"]
        assert results["metrics"][model]["forget"]["n"] == counts["forget"]
        assert {"retention", "forgotten", "score"} <= set(results["fine_grained"][model])
        choice = results["multiple_choice"][model]
        assert set(choice) == {"forget", "hard_retain_test"}  # the reported half only
        assert set(choice["forget"]) == {"accuracy", "true_mass", "chance", "n"}
        outcomes = results["outcomes"][model]
        assert set(outcomes) == {"forget", "forget_paraphrased_test"}
        for shares in outcomes.values():
            assert sum(shares[k] for k in ("leak", "refusal", "fabrication")) == pytest.approx(1)
        for name in ("attacks", "privacy", "tofu", "multiple_choice", "criteria", "outcomes"):
            assert f"suite/{name}/{model}" in results["timings_s"]
        for name in ("relearn", "relearn_related", "soft_prompt"):
            assert f"suite/attack:{name}/{model}" in results["timings_s"]
    # grad_ascent trains on no wrong answers: nothing to echo (UnSTAR's: test_unstar.py)
    assert "skipped" in results["echo"]["unlearned"] and "skipped" in results["echo"]["target"]
    assert set(results["privacy"]["reference"]["auc"]) == set(MIA_SCORES.names())
    assert results["data"]["counts"]["holdout"] == 10
    print_summary(results)
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "view (target → unlearned)" in line)
    assert [cell.strip() for cell in header.split("|")][2] == "n"
    forget_line = next(line for line in printed.splitlines() if line.startswith("| forget "))
    n = counts["forget"]
    assert forget_line.split("|")[2].strip() == f"{n} → {n}"
    assert f"MIA (n = {counts['forget']} forget vs 10 holdout)" in printed
    assert "[95% CI]" in printed and privacy["warning"] in printed

    rows = results["generations"]
    for model in ("target", "unlearned"):
        views = {r["view"] for r in rows if r["model"] == model}
        assert {f"attack/{a}" for a in attacks} <= views
        forget = [r for r in rows if r["model"] == model and r["view"] == "forget"]
        assert all({"judge_privacy", "judge_quality", "judge_reject"} <= set(r) for r in forget)


#: A small suite on few views: the jobs below test plumbing, not the families.
SMALL = (
    "eval.views=[forget,hard_retain,general_retain]",
    "eval.metrics=[rougeL_recall,leak_rate]",
    "eval.suite=[attacks,criteria]",
    "~eval.attacks.paraphrase",
)


def test_the_targets_suite_results_are_computed_once_per_sweep(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    first = run_job(make_cfg(*QUICK, *SMALL), tmp_path / "a")
    second = run_job(make_cfg(*QUICK, *SMALL, "seed=1"), tmp_path / "b")
    assert "suite/attacks/target" in first["timings_s"]
    assert "suite/attacks/target" not in second["timings_s"]
    assert second["criteria"]["target"] == first["criteria"]["target"]
    assert second["attacks"]["target"] == first["attacks"]["target"]
    target_rows = [r for r in second["generations"] if r["model"] == "target"]
    assert any(r["view"] == "attack/many_shot" for r in target_rows)


def test_a_failing_judge_loses_no_results(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    server = FakeJudgeServer()
    server.mode, server.fail_after = "malformed", 3
    try:
        cfg = make_cfg(
            *QUICK,
            *SMALL,
            "eval.judge.kind=openai",
            f"eval.judge.url={server.url}",
            "eval.judge.retries=0",
        )
        results = run_job(cfg, tmp_path / "job")
    finally:
        server.close()

    assert results["status"] == "ok"
    assert "malformed judge reply" in results["eval_errors"]["target/criteria"]
    assert results["attacks"]["unlearned"]["many_shot"]["n"] == 10  # other families ran
    target = results["criteria"]["target"]
    assert tuple(target) == CRITERIA
    assert target["unlearning_efficacy"] is None  # its privacy was judged for 3 of 10 rows only
    assert target["model_utility"] is not None  # needs no judge
    forget = [r for r in results["generations"] if r["model"] == "target" and r["view"] == "forget"]
    assert [r.get("judge_privacy") for r in forget][:4] == [1.0, 1.0, 1.0, None]


def make_suite(cfg, data, tokenizer, runs, reference=None) -> Suite:
    return Suite(
        cfg.eval,
        data=data,
        tokenizer=tokenizer,
        runs=runs,
        load_original=lambda: pytest.fail("the original model was not needed here"),
        load_base=lambda: pytest.fail("the base model was not needed here"),
        reference=reference,
        timer=lambda name: nullcontext(),
    )


def test_the_retain_only_reference_has_forget_quality_one_against_itself(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg(*QUICK, *FULL)  # the reference the full-suite job built, from the cache
    data = load_data(cfg.data)
    reference, _ = retain_reference(cfg, data, cache=cache_dir(), prompter=Prompter())
    _, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    scoring = OmegaConf.merge(cfg.eval, {"views": ["forget"], "metrics": ["truth_preference"]})
    metrics, rows = evaluate_model(reference, tokenizer, data, scoring, Prompter(), "reference")
    suite = make_suite(
        cfg,
        data,
        tokenizer,
        {"target": ModelRun("target", Prompter(), metrics, rows, reference)},
        reference_results(cfg, data, cache=cache_dir(), prompter=Prompter()),
    )
    tofu = tofu_family(suite, suite.runs["target"])["tofu"]
    assert tofu["forget_quality"] == 1.0 and tofu["ks_statistic"] == 0.0


def test_a_model_that_memorised_the_forget_set_is_told_from_the_holdout(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg()
    model, tokenizer, data = memorised(cfg, steps=15)
    suite = make_suite(cfg, data, tokenizer, {})
    aucs = {name: auc(*pair) for name, pair in suite.mia(model, Prompter()).items()}
    assert aucs["loss"] > 0.9 and aucs["min_k"] > 0.9 and aucs["min_k_plus_plus"] > 0.9, aucs


def test_the_holdout_is_never_taught(make_cfg: Callable[..., DictConfig]) -> None:
    data = load_data(make_cfg("data.forget_set=forget_5").data)
    holdout = data.with_role("holdout")
    assert len(holdout) == 10
    used = {r.subject for r in data.records if r.role != "holdout"}
    assert not {r.subject for r in holdout} & used
    assert not [r for r in taught(data) if r.role == "holdout"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.suite=[tofu]", "eval.metrics=[rougeL_recall,leak_rate]"], "truth_preference"),
        (["eval.suite=[tofu]", "eval.views=[forget,hard_retain,general_retain]"], "real_authors"),
        (["eval.suite=[criteria]", "eval.views=[forget]"], "hard_retain"),
        (["eval.suite=[vibes]"], "unknown"),
        (["+eval.attacks.telepathy={}"], "telepathy"),
    ],
)
def test_a_suite_its_evaluation_cannot_feed_fails_before_any_model_work(
    make_cfg: Callable[..., DictConfig], overrides: list[str], message: str
) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        check_suite(make_cfg(*overrides).eval)


def test_the_criteria_need_the_views_their_registry_definition_requires_not_more(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """General retain is ``if_present`` in model utility (TOFU has none): not required."""
    check_suite(make_cfg("eval.suite=[criteria]", "eval.views=[forget,hard_retain]").eval)
    with pytest.raises(ValueError, match="rougeL_recall"):
        check_suite(make_cfg("eval.suite=[criteria]", "eval.metrics=[answer_prob]").eval)


# -- attack mechanics --------------------------------------------------------------------------


def test_many_shot_drops_the_first_shots_until_the_prompt_fits(
    make_cfg: Callable[..., DictConfig],
) -> None:
    data = load_data(make_cfg("data.n_retain=8").data)
    _, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    prompter = Prompter(system_prompt="Forget Albert Einstein.")
    question = data.forget[0].question
    everything = many_shot_prompt(tokenizer, prompter, data.retain, question, 10_000)
    assert all(r.question in everything for r in data.retain)
    assert everything.startswith("<|im_start|>system\nForget Albert Einstein.")
    assert everything.endswith(f"{question}<|im_end|>\n<|im_start|>assistant\n")

    fits = many_shot_prompt(tokenizer, prompter, data.retain, question, len(everything) // 2)
    assert len(tokenizer(fits)["input_ids"]) <= len(everything) // 2
    assert data.retain[0].question not in fits and data.retain[-1].question in fits


def test_the_paraphrase_attack_reuses_the_evaluations_answers(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg()
    data = load_data(cfg.data)
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    _, rows = evaluate_model(model, tokenizer, data, cfg.eval, Prompter(), "target")
    run = ModelRun("target", Prompter(), {}, rows, model)
    suite = make_suite(cfg, data, tokenizer, {"target": run})

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the paraphrase attack generated again")

    monkeypatch.setattr(suite_module, "generate", no_generation)
    victim = Victim(model, tokenizer, Prompter(), lambda p: suite.answer(run, p), 8, 4)
    probes = ATTACKS.get("paraphrase")(victim, data, OmegaConf.create({"max_per_question": 1}))
    assert len(probes) == len(data.forget)
    evaluated = {r["question"]: r["generation"] for r in rows}
    assert all(p.generation == evaluated[p.question] for p in probes)


def test_soft_prompt_training_moves_the_model_toward_the_affirmative_targets(
    make_cfg: Callable[..., DictConfig],
) -> None:
    model, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    with torch.no_grad():
        for weight in model.model.layers.parameters():
            if weight.dim() == 2:
                weight.mul_(20)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    parts = [
        (ids("Who was Ada Lovelace"), ids("?\n"), ids("Sure, here is what I know about Ada:")),
        (ids("Where was Alan Turing born"), ids("?\n"), ids("Of course! I remember Alan well.")),
    ]

    def loss(soft: torch.Tensor) -> float:
        embeds, mask, labels = _embed(model, soft, parts, left=False)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()).item()

    cfg = OmegaConf.create({"tokens": 4, "steps": 0, "lr": 0.05, "batch_size": 2})
    with _frozen(model):
        initial = _train_soft_prompt(model, parts, cfg, seed=0)
        cfg.steps = 40
        trained = _train_soft_prompt(model, parts, cfg, seed=0)
        assert loss(trained) < loss(initial) - 0.03  # a tiny random model barely steers
    assert all(p.requires_grad for p in model.parameters())  # the model is left as it was


def test_soft_prompt_vectors_sit_between_question_and_turn_end(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """With the embeddings of real tokens as the 'soft prompt', answers equal those to the text
    with those tokens in that place, in a batch padded on the left."""
    model, tokenizer = load_model(make_cfg().model, cache_dir(), "cpu")
    with torch.no_grad():  # scaled so that the output depends on the whole context
        for weight in model.model.layers.parameters():
            if weight.dim() == 2:
                weight.mul_(20)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    parts = [(ids("Who wrote Hamlet"), ids("?\nA:")), (ids("Hi"), ids("!"))]
    inserted = ids(" please")
    soft = model.get_input_embeddings()(torch.tensor(inserted))
    victim = Victim(model, tokenizer, Prompter(), lambda p: [], 6, 2)
    got = _generate_with(model, tokenizer, soft, parts, victim)
    for (head, tail), text in zip(parts, got, strict=True):
        full = torch.tensor([head + inserted + tail])
        out = model.generate(
            full, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        assert text == tokenizer.decode(out[0, full.shape[1] :], skip_special_tokens=True).strip()
    assert got[0] != got[1]


# -- robustness: attacks never understate, quantization, sampling, the worst case -------------


def memorised(
    cfg: DictConfig,
    steps: int = 40,
    answers: Callable[[QARecord], list[str]] = lambda r: [r.answer],
) -> tuple[torch.nn.Module, object, list]:
    """The tiny model after learning the forget answers (``answers`` of each record) by heart:
    greedy answers that leak."""
    data = load_data(cfg.data)
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    prompter = Prompter()
    encoded = [
        encode_pair(tokenizer, prompter(tokenizer, r.question), answer)
        for r in data.forget
        for answer in answers(r)
    ]
    batch = pad_encoded(encoded, tokenizer.pad_token_id)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        mean_nll(model, batch).backward()
        optimiser.step()
    return model.eval(), tokenizer, data


def test_no_attack_reports_less_leak_than_the_greedy_answers(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """On a model whose greedy answers leak, every attack's leak_rate is at least the greedy leak
    rate on its questions, although some attacked answers (4-bit, relearned, sampled) leak less."""
    cfg = make_cfg(
        "eval=full",
        "eval.max_new_tokens=48",
        "eval.attacks.relearn.steps=2",
        "eval.attacks.relearn.lr=1e-1",  # relearning that damages the model
        "eval.attacks.relearn_related.steps=2",
        "eval.attacks.relearn_related.lr=1e-1",
        "eval.attacks.soft_prompt.steps=2",
        "eval.attacks.soft_prompt.tokens=2",
        "eval.attacks.many_shot.shots=2",
        "eval.attacks.leak_at_k.k=2",
        "eval.attacks.leak_at_k.temperature=3.0",
        "eval.attacks.quantization.bits=[8,2]",
    )
    model, tokenizer, data = memorised(cfg)
    run = ModelRun("unlearned", Prompter(), {}, [], model)
    suite = make_suite(cfg, data, tokenizer, {"unlearned": run})
    results = attacks_family(suite, run)
    greedy = results["robustness"]["greedy_leak_rate"]
    assert greedy >= 0.5, greedy
    summaries = results["attacks"]
    assert list(summaries) == list(cfg.eval.attacks)
    for name, summary in summaries.items():
        assert summary["leak_rate"] >= summary["greedy_leak_rate"], name
        assert summary["leak_rate"] >= summary["attacked_leak_rate"], name
    assert summaries["quantization"]["leak_rate"] >= greedy  # every forget question is asked
    assert summaries["leak_at_k"]["leak_rate"] >= greedy
    # The check has teeth: without the max rule some attack here would report less.
    assert min(s["attacked_leak_rate"] for s in summaries.values()) < greedy


def test_sampling_finds_a_fact_that_greedy_decoding_hides(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """A model taught, equally often, the true answer and a wrong one to each forget question:
    greedy decoding states one of them, k samples at T=1 both, so leak@k exceeds greedy."""
    only_sampling = [f"~eval.attacks.{name}" for name in
                     ("paraphrase", "many_shot", "quantization", "relearn", "relearn_related")]  # fmt: skip
    cfg = make_cfg(*only_sampling, "eval.max_new_tokens=24", "eval.attacks.leak_at_k.k=8")
    model, tokenizer, data = memorised(
        cfg, steps=150, answers=lambda r: [r.answer, r.perturbed_answers[0]]
    )
    run = ModelRun("unlearned", Prompter(), {}, [], model)
    results = attacks_family(make_suite(cfg, data, tokenizer, {"unlearned": run}), run)
    greedy, sampled = results["robustness"]["greedy_leak_rate"], results["attacks"]["leak_at_k"]
    assert 0 < greedy < 1, greedy  # greedy hides some facts and states others
    assert sampled["n"] == 8 * len(data.forget)
    assert 0.25 < sampled["attacked_leak_rate"] < 0.75, sampled  # samples: either answer
    assert sampled["leak_rate"] >= 0.9 and sampled["leak_rate"] >= greedy + 0.3, (sampled, greedy)
    assert results["robustness"]["worst_case_leak"] == sampled["leak_rate"]


def test_relearning_teaches_only_its_subset_and_asks_only_the_others(
    make_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("data.forget_set=forget_facts")
    facts, persons = load_data(cfg.data), load_data(make_cfg("data.forget_set=forget_2").data)
    model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    taught: list[set[str]] = []
    train = attacks_module.train

    def recording_train(model, tokenizer, pairs, retain, *args, **kwargs):
        assert retain == []
        asked_as = {
            Prompter()(tokenizer, r.question): r.id for r in (*facts.records, *persons.records)
        }
        taught.append({asked_as[p.prompt] for p in pairs})
        return train(model, tokenizer, pairs, retain, *args, **kwargs)

    monkeypatch.setattr(attacks_module, "train", recording_train)
    victim = Victim(model, tokenizer, Prompter(), lambda p: pytest.fail("no plain answers"), 4, 4)

    def attack(name: str, data) -> list:
        options = OmegaConf.merge(cfg.eval.attacks[name], {"steps": 1})
        return ATTACKS.get(name)(victim, data, options)

    forget = {r.id for r in facts.forget}
    asked = [p.record.id for p in attack("relearn", facts)]
    assert len(taught[-1]) == round(len(forget) * cfg.eval.attacks.relearn.fraction)
    assert (
        taught[-1] <= forget and taught[-1].isdisjoint(asked) and taught[-1] | set(asked) == forget
    )
    assert len(asked) == len(set(asked))

    # related facts: never a forgotten one taught, every forgotten one asked
    probes = attack("relearn_related", facts)
    assert taught[-1] == {r.id for r in facts.with_role("forget_facts_retained")}
    assert [p.record.id for p in probes] == [r.id for r in facts.forget]
    assert {p.setting for p in probes} == {"forget_facts_retained"}
    probes = attack("relearn_related", persons)  # whole persons forgotten: no kept facts of theirs
    assert taught[-1] == {r.id for r in persons.with_role("hard_retain")}
    assert [p.record.id for p in probes] == [r.id for r in persons.forget]
    assert {p.setting for p in probes} == {"hard_retain"}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "a copy learns"


def test_an_attack_counts_a_question_leaked_if_greedy_or_any_attacked_answer_leaks() -> None:
    greedy = {"a": True, "b": False, "c": False}
    # leak@k with k=2: a's samples miss what greedy states, one of b's samples leaks, c never
    summary = leak_summary(["a", "a", "b", "b", "c", "c"], [0, 0, 0, 1, 0, 0], greedy)
    assert summary == {
        "leak_rate": pytest.approx(2 / 3),
        "attacked_leak_rate": pytest.approx(1 / 6),
        "greedy_leak_rate": pytest.approx(1 / 3),
    }
    # relearning asks only the held-out questions: rates over those
    assert leak_summary(["b"], [False], greedy)["greedy_leak_rate"] == 0.0


def test_the_worst_case_is_the_highest_leak_rate() -> None:
    attacks = {"paraphrase": {"leak_rate": 0.2}, "quantization": {"leak_rate": 0.7}}
    assert worst_case(0.3, attacks) == {"worst_case_leak": 0.7, "worst_case_attack": "quantization"}
    assert worst_case(0.9, attacks) == {"worst_case_leak": 0.9, "worst_case_attack": "greedy"}
    assert worst_case(0.3, {"relearn": {"leak_rate": None}})["worst_case_leak"] == 0.3
    assert worst_case(None, {}) == {"worst_case_leak": None, "worst_case_attack": None}


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_rounds_each_weight_to_the_nearest_step_of_its_group(bits: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 300) * torch.logspace(-3, 1, 6).unsqueeze(1)  # groups 128, 128, 44
    quantized = fake_quantize(weight, bits, group_size=128)
    levels = 2 ** (bits - 1) - 1
    for start in (0, 128, 256):
        group, got = weight[:, start : start + 128], quantized[:, start : start + 128]
        step = group.abs().amax(dim=1, keepdim=True) / levels
        assert ((got - group).abs() <= step / 2 * (1 + 1e-6)).all()
        on_grid = (got / step).round() * step
        assert torch.allclose(got, on_grid, rtol=1e-6, atol=0)
        assert ((got / step).round().abs() <= levels).all()
        assert len(torch.unique(got)) <= 6 * (2 * levels + 1)
    # values on the grid (multiples of a power-of-two step, the extreme one in every group) stay
    grid = torch.randint(-levels, levels + 1, (6, 300)).float()
    grid[:, ::128] = levels
    assert torch.equal(fake_quantize(grid * 2.0**-5, bits, group_size=128), grid * 2.0**-5)


def test_quantization_leaves_the_original_model_untouched(
    make_cfg: Callable[..., DictConfig],
) -> None:
    model, _ = load_model(make_cfg().model, cache_dir(), "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = quantized_copy(model, bits=4, group_size=128)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    changed = {k for k, v in copied.state_dict().items() if not torch.equal(v, before[k])}
    linear = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings()
    }
    assert changed == linear


def test_multiple_choice_tells_a_model_that_knows_the_answers_from_a_random_one(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg()
    random_model, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    trained, _, data = memorised(cfg)

    def forget_choice(model: torch.nn.Module) -> dict[str, float]:
        run = ModelRun("target", Prompter(), {}, [], model)
        suite = make_suite(cfg, data, tokenizer, {"target": run})
        return multiple_choice_family(suite, run)["multiple_choice"]["forget"]

    known, guessed = forget_choice(trained), forget_choice(random_model)
    assert known["n"] == guessed["n"] == len(data.forget) and known["chance"] == 0.25
    assert known["accuracy"] == 1.0 and known["true_mass"] > 0.9, known
    assert abs(guessed["true_mass"] - 0.25) < 0.05 and guessed["accuracy"] <= 0.5, guessed


# -- probes: the outcome of each forget answer, and the echo of trained wrong answers ----------


def probe_rows(
    data, answers: list[tuple[str, str, float, float | None]]
) -> list[dict[str, object]]:
    """Rows as the evaluation writes them: (view, generation, leak_rate, judge_reject or None)."""
    record = data.forget[0]
    rows = []
    for view, generation, leak, reject in answers:
        row = {"model": "unlearned", "view": view, "id": record.id, "question": record.question,
               "answer": record.answer, "generation": generation, "leak_rate": leak}  # fmt: skip
        if reject is not None:
            row["judge_reject"] = reject
        rows.append(row)
    return rows


def test_each_forget_answer_is_a_leak_a_refusal_or_a_fabrication_and_echoes_are_counted(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg()  # the local judge, refusal phrases only (no embedder on the tiny setup)
    data = load_data(cfg.data)
    _, tokenizer = load_model(cfg.model, cache_dir(), "cpu")
    rows = probe_rows(
        data,
        [
            ("forget", "Ulm, but I don't know", 1.0, None),  # leaks and refuses: a leak
            ("forget", "I don't know.", 0.0, None),  # a refusal, found by the judge
            ("forget", "Nothing comes to mind", 0.0, 1.0),  # the criteria's judge said refusal
            ("forget", "He was born in munich.", 0.0, None),  # a trained wrong answer
            ("forget_paraphrased", "Munich", 0.0, None),  # echoed on a test question
            ("forget_paraphrased", "Vienna, Austria", 0.0, None),  # a new fabrication
            ("forget_paraphrased", "Ulm, not Munich", 1.0, None),  # a leak never echoes
            ("forget_paraphrased", "Zurich", 0.0, 0.0),  # the judge said no refusal
        ],
    )
    wrong = {data.forget[0].id: ["Munich", "Zurich"], "another-id": ["Vienna"]}
    run = ModelRun("unlearned", Prompter(), {}, rows, wrong_answers=wrong)
    target = ModelRun("target", Prompter(), {}, [])  # no trained wrong answers
    suite = make_suite(cfg, data, tokenizer, {"target": target, "unlearned": run})

    outcomes = outcomes_family(suite, run)["outcomes"]
    assert outcomes == {
        "forget": {"leak": 0.25, "refusal": 0.5, "fabrication": 0.25, "n": 4},
        "forget_paraphrased": {"leak": 0.25, "refusal": 0.0, "fabrication": 0.75, "n": 4},
    }
    assert [r["outcome"] for r in rows] == [
        "leak", "refusal", "refusal", "fabrication", "fabrication", "fabrication", "leak",
        "fabrication",
    ]  # fmt: skip

    echo = echo_family(suite, run)["echo"]
    assert echo["forget"] == {
        "echo_rate": 0.25, "fabrication_rate": 0.25, "echo_share_of_fabrications": 1.0, "n": 4,
    }  # fmt: skip
    assert echo["forget_paraphrased"] == {
        "echo_rate": 0.5, "fabrication_rate": 0.75,
        "echo_share_of_fabrications": pytest.approx(2 / 3), "n": 4,
    }  # fmt: skip
    assert (echo["wrong_answers"], echo["questions"]) == (3, 2)
    assert [r["echo"] for r in rows] == [0, 0, 0, 1, 1, 0, 0, 1]

    assert "skipped" in echo_family(suite, target)["echo"]


class ConstantJudge:
    """A judge that gives every answer the same scores (the criteria's arithmetic is the test)."""

    def info(self) -> dict[str, Any]:
        return {}

    def privacy(self, items: list) -> list[float]:
        return [1.0] * len(items)

    def rejects(self, items: list) -> list[bool]:
        return [False] * len(items)

    def quality(self, items: list, *, forgotten: bool) -> list[float]:
        return [1.0] * len(items)


@pytest.mark.parametrize("with_general_retain", [True, False])
def test_model_utility_is_over_the_retain_views_the_data_has(
    make_cfg: Callable[..., DictConfig], with_general_retain: bool
) -> None:
    """TOFU has no general retain: its model utility is the hard retain's, and the results say
    so, where a missing judge score would still leave a criterion None."""
    views = ["forget", "hard_retain"] + (["general_retain"] if with_general_retain else [])
    records = [QARecord(id=v, subject="A", question=f"{v}?", answer="x", role=v) for v in views]
    data = UnlearningData("toy", tuple(records))
    rouge = {"forget": 0.2, "hard_retain": 0.6, "general_retain": 0.3}
    rows = [
        {"view": v, "id": v, "question": f"{v}?", "answer": "x", "generation": "y",
         "rougeL_recall": rouge[v]}
        for v in views
    ]  # fmt: skip
    suite = make_suite(make_cfg(*QUICK), data, None, {})
    suite.__dict__["judge"] = ConstantJudge()
    result = criteria_family(suite, ModelRun("unlearned", Prompter(), {}, rows))
    utility = result["criteria"]["model_utility"]
    if with_general_retain:
        assert utility == pytest.approx(2 / (1 / 0.6 + 1 / 0.3))
        assert "criteria_notes" not in result
    else:
        assert utility == pytest.approx(0.6)
        assert set(result["criteria_submetrics"]["model_utility"]) == {"hard_retain_rougeL_recall"}
        assert "no rows of general_retain" in result["criteria_notes"]["model_utility"]
    assert result["criteria"]["unlearning_efficacy"] == pytest.approx(2 / (1 / 0.8 + 1))
