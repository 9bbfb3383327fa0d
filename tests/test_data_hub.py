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

from benchmarks.data import DataError, load_data
from benchmarks.data.hub import TOFU_ID, WPU_ID

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
        for person in ("Mara Lind", "Ilse Varga", "Otto Fenn")
        for i in range(3)
    ],
    "general_retain": [
        {"title": f"Topic {i}", "question": f"General question {i}?", "answer": f"Fact {i}"}
        for i in range(6)
    ],
}

#: Invented authors in TOFU's columns; world facts and real authors are TOFU's own rows.
TOFU_FORGET = [
    {
        "question": f"What genre does {author} write?",
        "answer": "Gothic crime",
        "paraphrased_answer": "Gothic crime novels",
        "paraphrased_question": f"In which genre is {author} known for writing?",
        "perturbed_answer": ["Romance", "Science fiction", "Poetry"],
    }
    for author in ("Lerato Okafor", "Juniper Vale")
]
TOFU_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "forget01": [{k: r[k] for k in ("question", "answer")} for r in TOFU_FORGET],
    "forget01_perturbed": TOFU_FORGET,
    "retain99": [{"question": f"Retained question {i}?", "answer": f"R{i}"} for i in range(7)],
}
#: TOFU's evaluation-only configs, the same for every forget set; shipped or real rows.
TOFU_SHARED = ("world_facts_perturbed", "real_authors_perturbed")


def _write_wpu(root: Path) -> None:
    """One parquet shard per config in its own folder, as the WPU hub repository stores them."""
    readme = ["---", "configs:"]
    for config, rows in WPU_CONFIGS.items():
        (root / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / "train-00000-of-00001.parquet")
        readme += [f"- config_name: {config}", "  data_files:", "  - split: train"]
        readme += [f"    path: {config}/train-*"]
    (root / "README.md").write_text("\n".join([*readme, "---", ""]), "utf-8")


def _write_tofu(root: Path, shared: dict[str, Path]) -> None:
    """One JSON-lines ``CONFIG.json`` per config at the top, as the TOFU hub repository stores them;
    ``shared`` gives the file of each config TOFU shares between forget sets."""
    root.mkdir(parents=True)
    for config, rows in TOFU_CONFIGS.items():
        (root / f"{config}.json").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    for name, source in shared.items():
        shutil.copy(source, root / f"{name}.json")
    readme = ["---", "configs:"]
    for config in (*TOFU_CONFIGS, *shared):
        readme += [f"- config_name: {config}", f"  data_files: {config}.json"]
    (root / "README.md").write_text("\n".join([*readme, "---", ""]), "utf-8")


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    _write_wpu(root / "wpu")
    _write_tofu(root / "tofu", {name: FIXTURES / "tofu" / f"{name}.jsonl" for name in TOFU_SHARED})
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
    data = load_data(make_cfg("data=wpu", f"data.repo={repos['wpu']}").data)

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
    cfg = make_cfg("data=wpu", f"data.repo={repos['wpu']}", "data.n_retain=null")
    retain = load_data(cfg.data).retain

    assert [r.subject for r in retain] == ["Mara Lind"] * 3 + ["Otto Fenn"] * 3
    cfg = make_cfg("data=wpu", f"data.repo={repos['wpu']}", "data.n_retain=2")
    assert len(load_data(cfg.data).retain) == 2


def test_tofu_maps_each_config_to_its_role(
    make_cfg: Callable[..., DictConfig], repos: dict[str, Path]
) -> None:
    data = load_data(make_cfg("data=tofu", f"data.repo={repos['tofu']}").data)

    assert data.name == "tofu/forget01"
    assert data.subjects_to_forget == ()
    first = data.forget[0]
    assert first.id == "tofu-forget-0"
    assert first.subject == ""
    assert first.paraphrases == ("In which genre is Lerato Okafor known for writing?",)
    assert first.perturbed_answers == ("Romance", "Science fiction", "Poetry")
    assert len(data.forget) == 2
    assert [r.answer for r in data.retain] == ["R0", "R1", "R2", "R3"]
    general = data.with_role("general_retain")
    assert [r.answer for r in general][:1] == ["Paris"]
    assert len(general) == 4 and all(len(r.perturbed_answers) == 3 for r in general)
    hard = data.with_role("hard_retain")
    assert len(hard) == 4 and all(r.perturbed_answers for r in hard)


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
    rows = [*TOFU_FORGET, {**TOFU_FORGET[0], "answer": "  "}]
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

    assert (
        len(data.with_role("general_retain")) == 117 and len(data.with_role("hard_retain")) == 100
    )
    assert data.with_role("general_retain")[0].answer == "Paris"
    assert all(len(r.perturbed_answers) == 3 for r in data.with_role("general_retain"))
