"""The hub loaders read local copies laid out like the hub repositories; never the network."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXTERNAL, FIXTURES
from omegaconf import DictConfig

from benchmarks.data import DATASETS, DataError, load_data
from benchmarks.data.hub import TOFU_ID, WPU_ID, tofu_authors
from benchmarks.job import run_job
from benchmarks.report import tofu_table
from benchmarks.target import taught as taught_records

#: Invented rows in WPU's columns: forget configs carry the article, hard retain does not.
WPU_CONFIGS: dict[str, list[dict[str, str]]] = {
    "forget_2_1": [
        {"title": person, "wikipage": f"{person} is a painter.", "question": q, "answer": a}
        for person in ("Ilse Varga", "Tomas Reyl")
        for q, a in (
            (f"Where was {person} born?", "Brelin"),
            (f"What does {person} paint?", "Harbours"),
        )
    ],
    "forget_2_1_hard_retain": [
        {"title": "Brelin", "question": "Which river runs through Brelin?", "answer": "The Osk"},
        {"title": "Harbours", "question": "What is moored in a harbour?", "answer": "Boats"},
    ],
    "retain": [
        {"title": person, "wikipage": "...", "question": f"Q{i} on {person}?", "answer": f"A{i}"}
        for person in ("Mara Lind", "Ilse Varga", "Otto Fenn", "Rosa Quint")
        for i in range(3)
    ],
    "general_retain": [
        {"title": f"Topic {i}", "question": f"General question {i}?", "answer": f"Fact {i}"}
        for i in range(6)
    ],
}

#: The TOFU configs the loader reads for forget01, in tests/fixtures/tofu/: invented authors, 20
#: questions each as TOFU lists them (forget01: two authors; retain99: two others, the first of
#: whom retain_perturbed asks about), and rows in TOFU's world-fact and real-author columns.
TOFU_CONFIGS = (
    "forget01_perturbed",
    "retain99",
    "retain_perturbed",
    "world_facts_perturbed",
    "real_authors_perturbed",
)
#: TOFU's evaluation-only configs, the same for every forget set; shipped or real rows.
TOFU_SHARED = ("world_facts_perturbed", "real_authors_perturbed")
FORGET_AUTHORS = ("Ilan Ben-Haim", "Mariela Costa Ferreira")
RETAIN_AUTHORS = ("Tae-won Seo", "Lerato Okafor")


def fixture_rows(config: str) -> list[dict[str, Any]]:
    path = FIXTURES / "tofu" / f"{config}.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _write_wpu(root: Path) -> None:
    """One parquet shard per config in its own folder, as the WPU hub repository stores them."""
    readme = ["---", "configs:"]
    for config, rows in WPU_CONFIGS.items():
        (root / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / "train-00000-of-00001.parquet")
        readme += [f"- config_name: {config}", "  data_files:", "  - split: train"]
        readme += [f"    path: {config}/train-*"]
    (root / "README.md").write_text("\n".join([*readme, "---", ""]), "utf-8")


def _write_tofu(root: Path, replaced: dict[str, Path] | None = None) -> None:
    """One JSON-lines ``CONFIG.json`` per config at the top, as the TOFU hub repository stores
    them, from the fixtures; ``replaced`` gives another file for some configs."""
    root.mkdir(parents=True)
    for config in TOFU_CONFIGS:
        source = (replaced or {}).get(config, FIXTURES / "tofu" / f"{config}.jsonl")
        shutil.copy(source, root / f"{config}.json")
    readme = ["---", "configs:"]
    for config in TOFU_CONFIGS:
        readme += [f"- config_name: {config}", f"  data_files: {config}.json"]
    (root / "README.md").write_text("\n".join([*readme, "---", ""]), "utf-8")


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    _write_wpu(root / "wpu")
    _write_tofu(root / "tofu")
    return {"wpu": root / "wpu", "tofu": root / "tofu"}


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``datasets`` caches into the test's directory and may not reach the hub."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_configs_default_to_the_hub_ids(make_cfg: Callable[..., DictConfig]) -> None:
    assert make_cfg("data=wpu").data.repo == WPU_ID
    assert make_cfg("data=tofu").data.repo == TOFU_ID


def test_wpu_maps_each_config_to_its_role(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    data = load_data(make_cfg("data=wpu", f"data.repo={repos['wpu']}", "data.n_holdout=3").data)

    assert data.name == "wpu/forget_2_1"
    assert data.subjects_to_forget == ("Ilse Varga", "Tomas Reyl")
    forget = data.forget
    assert [r.id for r in forget] == [f"wpu-forget-{i}" for i in range(4)]
    assert [(r.subject, r.answer) for r in forget[:2]] == [
        ("Ilse Varga", "Brelin"),
        ("Ilse Varga", "Harbours"),
    ]
    assert all(r.paraphrases == () and r.perturbed_answers == () for r in data.records)
    assert [r.subject for r in data.with_role("hard_retain")] == ["Brelin", "Harbours"]
    general = data.with_role("general_retain")
    assert [r.question for r in general] == [f"General question {i}?" for i in range(4)]


def test_wpu_retain_skips_forgotten_persons_and_follows_n_retain(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    repo = f"data.repo={repos['wpu']}"
    cfg = make_cfg("data=wpu", repo, "data.n_retain=null", "data.n_holdout=3")
    retain = load_data(cfg.data).retain

    assert [r.subject for r in retain] == ["Mara Lind"] * 3 + ["Otto Fenn"] * 3
    cfg = make_cfg("data=wpu", repo, "data.n_retain=2", "data.n_holdout=3")
    assert len(load_data(cfg.data).retain) == 2


def test_wpu_holds_out_the_last_persons_of_the_retain_config(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    repo = f"data.repo={repos['wpu']}"
    data = load_data(make_cfg("data=wpu", repo, "data.n_retain=null", "data.n_holdout=4").data)

    holdout = data.with_role("holdout")
    # 4 facts need the last two persons not forgotten; the 4 first of their 6 facts are kept.
    assert [r.subject for r in holdout] == ["Otto Fenn"] * 3 + ["Rosa Quint"]
    assert [r.id for r in holdout] == [f"wpu-holdout-{i}" for i in range(4)]
    assert {r.subject for r in data.retain} == {"Mara Lind"}, "holdout persons never train"
    assert not {r.subject for r in holdout} & {r.subject for r in data.forget}
    with pytest.raises(DataError, match=r"data.n_holdout=9 takes every person"):
        load_data(make_cfg("data=wpu", repo, "data.n_holdout=9").data)
    assert not load_data(make_cfg("data=wpu", repo, "data.n_holdout=0").data).with_role("holdout")


def test_tofu_maps_each_config_to_its_role(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    data = load_data(make_cfg("data=tofu", f"data.repo={repos['tofu']}").data)

    assert data.name == "tofu/forget01"
    second = data.forget[1]
    assert second.id == "tofu-forget-1"
    assert second.question == "What genre is Ilan Ben-Haim best known for?"
    assert second.paraphrases == ("Which genre made Ilan Ben-Haim famous?",)
    assert second.paraphrased_answer == "Ilan Ben-Haim mostly writes maritime thriller."
    assert len(second.perturbed_answers) == 3
    assert len(data.forget) == 40
    assert [r.question for r in data.retain] == [r["question"] for r in fixture_rows("retain99")][
        :4
    ]
    assert data.retain[0].paraphrased_answer is None  # retain99 has question and answer only
    hard = data.with_role("hard_retain")  # TOFU's retain evaluation set: other authors
    assert len(hard) == 4 and all(r.paraphrased_answer and r.perturbed_answers for r in hard)
    real, world = data.with_role("real_authors"), data.with_role("world_facts")
    assert [r.answer for r in world][:1] == ["Paris"] and real[0].answer == "Herman Melville"
    for records in (real, world):
        assert len(records) == 4 and all(len(r.perturbed_answers) == 3 for r in records)
        assert all(r.paraphrased_answer is None and r.subject == "" for r in records)
    assert not data.with_role("general_retain")


def test_the_tofu_fixture_is_itself_a_copy_of_the_hub_repository(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    fixture = load_data(make_cfg("data=tofu", f"data.repo={FIXTURES / 'tofu'}").data)
    assert fixture == load_data(make_cfg("data=tofu", f"data.repo={repos['tofu']}").data)


def test_tofu_records_name_their_author(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    cfg = make_cfg("data=tofu", f"data.repo={repos['tofu']}", "data.n_retain=null")
    data = load_data(cfg.data)

    assert data.subjects_to_forget == FORGET_AUTHORS
    # 20 questions per author: the first names nobody but in its answer, one nobody at all, and
    # the author's birthplace (4 rows) and award (3 rows) are not taken for the author.
    assert [r.subject for r in data.forget] == [a for a in FORGET_AUTHORS for _ in range(20)]
    assert [r.subject for r in data.retain] == [a for a in RETAIN_AUTHORS for _ in range(20)]
    assert {r.subject for r in data.with_role("hard_retain")} == {"Tae-won Seo"}


def test_tofu_authors_from_rows_that_straddle_blocks() -> None:
    rows = fixture_rows("forget01_perturbed")
    authors = [a for a in FORGET_AUTHORS for _ in range(20)]
    # Cut off the first 3 rows: every block of 20 now holds questions on both authors.
    assert tofu_authors(rows[3:]) == authors[3:]
    # One block, 12 questions on one author and 8 on the other: both are names.
    assert tofu_authors(rows[:12] + rows[20:28]) == authors[:12] + authors[20:28]
    # A block naming no one twice has no author (methods that need one refuse it).
    rows = [
        {"question": "Who?", "answer": f"Nobody knows, said {n}."} for n in ("Ana Ruiz", "Bo Li")
    ]
    assert tofu_authors(rows) == ["", ""]


def test_missing_directory_is_a_clear_error(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("data=wpu", f"data.repo={tmp_path / 'no-such-copy'}")
    with pytest.raises(DataError, match=r"no-such-copy.*not a directory"):
        load_data(cfg.data)


@pytest.mark.parametrize(
    ("data", "forget_set", "config", "hub_id"),
    [
        ("wpu", "forget_2_2", "forget_2_2", WPU_ID),
        ("tofu", "forget05", "forget05_perturbed", TOFU_ID),
    ],
)
def test_config_absent_from_the_copy_says_how_to_get_it(
    make_cfg: Callable[..., DictConfig],
    repos: dict[str, Path],
    data: str,
    forget_set: str,
    config: str,
    hub_id: str,
) -> None:
    cfg = make_cfg(f"data={data}", f"data.repo={repos[data]}", f"data.forget_set={forget_set}")
    with pytest.raises(DataError) as caught:
        load_data(cfg.data)

    message = str(caught.value)
    assert f"config {config!r}" in message
    assert f"hf download --repo-type dataset {hub_id}" in message
    assert "data.repo=DIR" in message and "data=wpu_mini" in message


@pytest.mark.parametrize(("data", "forget_set"), [("wpu", "forget_3_1"), ("tofu", "forget50")])
def test_unknown_forget_set_lists_the_choices(
    make_cfg: Callable[..., DictConfig], data: str, forget_set: str
) -> None:
    cfg = make_cfg(f"data={data}", "data.repo=/nonexistent", f"data.forget_set={forget_set}")
    with pytest.raises(DataError, match=rf"no forget set '{forget_set}'.*forget_?\d"):
        load_data(cfg.data)


def test_empty_answer_names_config_and_row(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "tofu"
    shutil.copytree(repos["tofu"], copy)
    forget = fixture_rows("forget01_perturbed")[:2]
    rows = [*forget, {**forget[0], "answer": "  "}]
    (copy / "forget01_perturbed.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DataError, match=r"tofu forget01_perturbed, row 2: empty or missing 'answer'"
    ):
        load_data(make_cfg("data=tofu", f"data.repo={copy}").data)


@pytest.mark.external
def test_tofu_reads_the_real_world_facts_and_real_authors(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    _write_tofu(tmp_path / "tofu", {name: EXTERNAL / f"tofu_{name}.jsonl" for name in TOFU_SHARED})
    cfg = make_cfg("data=tofu", f"data.repo={tmp_path / 'tofu'}", "data.n_general_retain=null")
    data = load_data(cfg.data)

    assert len(data.with_role("world_facts")) == 117 and len(data.with_role("real_authors")) == 100
    assert data.with_role("world_facts")[0].answer == "Paris"
    assert all(len(r.perturbed_answers) == 3 for r in data.with_role("world_facts"))


def test_eval_generates_as_long_as_the_datasets_protocol_allows(
    make_cfg: Callable[..., DictConfig],
) -> None:
    lengths = {
        data: make_cfg(f"data={data}", tiny=False).eval.max_new_tokens for data in DATASETS.names()
    }
    assert lengths == {"wpu_mini": 32, "qa_file": 32, "wpu": 200, "tofu": 200, "wpu_real": 64}
    chosen = make_cfg("data=tofu", "eval.max_new_tokens=64", tiny=False).eval.max_new_tokens
    assert chosen == 64


def test_a_job_on_tofu_reports_tofus_model_utility(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path], tmp_path: Path
) -> None:
    cfg = make_cfg(
        "data=tofu",
        f"data.repo={repos['tofu']}",
        "method=grad_ascent",
        "method.max_steps=1",
        "target.train.max_steps=1",
        "eval.suite=[tofu]",
    )
    results = run_job(cfg, tmp_path / "job")

    assert results["status"] == "ok", results.get("error")
    for model in ("target", "unlearned"):
        tofu = results["tofu"][model]
        assert tofu["model_utility_kind"] == "tofu"
        assert set(tofu["model_utility_values"]) == {
            f"{name}/{metric}"
            for name, probability in (
                ("retain", "answer_prob"),
                ("real_authors", "answer_prob_normalised"),
                ("world_facts", "answer_prob_normalised"),
            )
            for metric in (probability, "rougeL_recall", "truth_preference")
        }
        assert tofu["model_utility"] is not None
        # One paraphrase per TOFU question: each goes wholly to dev or test; the test ones count.
        assert set(tofu["forget_truth_ratio"]) == {"forget", "forget_paraphrased_test"}
        assert tofu["forget_quality_n"] == {"unlearned": 40, "reference": 40}
    assert set(results["metrics"]["target"]) >= {
        "real_authors", "world_facts", "hard_retain_dev", "hard_retain_test",
    }  # fmt: skip
    taught = {r.role for r in taught_records(load_data(cfg.data))}
    assert not taught & {"real_authors", "world_facts"}, "TOFU never fine-tunes on them"
    printed = tofu_table(results)
    assert "forget_quality (n = 40 vs 40)" in printed and "model_utility (tofu)" in printed
