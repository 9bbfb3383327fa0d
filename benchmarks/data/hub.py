"""``wpu`` and ``tofu``: the published benchmarks, read with the ``datasets`` library.

``data.repo`` is the hub id, or a directory holding a copy of the hub repository (made with
``hf download --repo-type dataset ID --local-dir DIR``): the per-config data files plus the
README whose ``configs`` table names them, so the same code reads both. Nothing is downloaded
unless ``data.repo`` is a hub id; offline, that fails with a DataError saying what to do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from benchmarks.data.loaders import DATASETS
from benchmarks.data.records import DataError, QARecord, UnlearningData

WPU_ID = "Shiyu-Lab/Wikipedia_Person_Unlearn"
WPU_FORGET_SETS = (
    *(f"forget_2_{i}" for i in range(1, 6)),
    *(f"forget_20_{i}" for i in range(1, 4)),
    "forget_100",
)
TOFU_ID = "locuslab/TOFU"
#: Each TOFU forget set and the retain config holding every other author.
TOFU_FORGET_SETS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HUB_IDS = {"wpu": WPU_ID, "tofu": TOFU_ID}


def _source(repo: str) -> str:
    """What ``datasets`` should open: an existing directory, else the hub id as given."""
    path = Path(repo).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or repo.startswith((".", "/", "~")):
        raise DataError(
            f"data.repo={repo!r} is not a directory; point it at a local copy of the "
            "dataset repository, or at its hub id"
        )
    return repo


def _load_rows(repo: str, config: str, hub_id: str) -> list[dict[str, Any]]:
    """The rows of one config's train split; any failure says how to get the data offline."""
    import datasets  # imported here: it takes seconds, and only the hub loaders need it

    source = _source(repo)
    try:
        return datasets.load_dataset(source, name=config, split="train").to_list()
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise DataError(
            f"cannot load config {config!r} of {source!r}: {err}\n"
            f"Without network: on a connected machine run `hf download --repo-type dataset "
            f"{hub_id} --local-dir DIR`, copy DIR here and set data.repo=DIR; "
            "or use the embedded dataset with data=wpu_mini."
        ) from err


def _strings(value: Any) -> tuple[str, ...]:
    """A column holding one string or a list of them, as non-empty stripped strings."""
    values = [value] if isinstance(value, str) else (value or [])
    return tuple(s.strip() for s in values if isinstance(s, str) and s.strip())


def _text(row: dict[str, Any], column: str, where: str) -> str:
    text = str(row.get(column) or "").strip()
    if not text:
        raise DataError(f"{where}: empty or missing {column!r}; columns are {sorted(row)}")
    return text


def _records(
    rows: Iterable[dict[str, Any]], dataset: str, config: str, role: str
) -> list[QARecord]:
    """Canonical records; WPU names the person in ``title``, TOFU has no subject column."""
    return [
        QARecord(
            id=f"{dataset}-{role}-{index}",
            subject=str(row.get("title") or "").strip(),
            question=_text(row, "question", f"{dataset} {config}, row {index}"),
            answer=_text(row, "answer", f"{dataset} {config}, row {index}"),
            role=role,
            paraphrases=_strings(row.get("paraphrased_question")),
            perturbed_answers=_strings(row.get("perturbed_answer")),
        )
        for index, row in enumerate(rows)
    ]


def _part(cfg: Any, dataset: str, config: str, role: str) -> list[QARecord]:
    """One config of the dataset as records of one role."""
    hub_id = HUB_IDS[dataset]
    return _records(_load_rows(cfg.get("repo") or hub_id, config, hub_id), dataset, config, role)


def _check_forget_set(forget_set: str, choices: Collection[str], dataset: str) -> None:
    if forget_set not in choices:
        raise DataError(
            f"{dataset} has no forget set {forget_set!r}; "
            f"choose data.forget_set from {list(choices)}"
        )


@DATASETS.register("wpu")
def load_wpu(cfg: Any) -> UnlearningData:
    """Forget every fact of a set of Wikipedia persons; hard retain asks about related entities."""
    _check_forget_set(cfg.forget_set, WPU_FORGET_SETS, "wpu")
    forget = _part(cfg, "wpu", cfg.forget_set, "forget")
    hard = _part(cfg, "wpu", f"{cfg.forget_set}_hard_retain", "hard_retain")
    forgotten = {r.subject for r in forget if r.subject}
    # The retain term must never train on a forgotten person's facts.
    retain = [r for r in _part(cfg, "wpu", "retain", "retain") if r.subject not in forgotten]
    general = _part(cfg, "wpu", "general_retain", "general_retain")
    return UnlearningData(
        name=f"wpu/{cfg.forget_set}",
        records=(*forget, *hard, *retain[: cfg.n_retain], *general[: cfg.n_general_retain]),
        subjects_to_forget=tuple(sorted(forgotten)),
    )


@DATASETS.register("tofu")
def load_tofu(cfg: Any) -> UnlearningData:
    """Forget fictitious authors; real authors are the hard retain, world facts the general one."""
    _check_forget_set(cfg.forget_set, TOFU_FORGET_SETS, "tofu")
    # The _perturbed config holds the same questions plus paraphrases and wrong answers.
    forget = _part(cfg, "tofu", f"{cfg.forget_set}_perturbed", "forget")
    hard = _part(cfg, "tofu", "real_authors_perturbed", "hard_retain")
    retain = _part(cfg, "tofu", TOFU_FORGET_SETS[cfg.forget_set], "retain")
    general = _part(cfg, "tofu", "world_facts_perturbed", "general_retain")
    n_general = cfg.n_general_retain
    return UnlearningData(
        name=f"tofu/{cfg.forget_set}",
        records=(*forget, *hard[:n_general], *retain[: cfg.n_retain], *general[:n_general]),
    )
