"""Held-out paraphrases for data that has none, written by the base model.

A data config with ``generate_paraphrases.enabled`` (``data=wpu_real``) asks for them: before
the target is taught, the base model paraphrases each forget question that has no paraphrases
with UnSTAR's few-shot prompt and filters (:meth:`unstar.antisamples.AntiSampleGenerator.
paraphrases`: a question, naming the person, close in meaning, not stating the answer), sampled
from the config's own seed. The job puts them in the data like a dataset's own paraphrases:
the dev/test split (benchmarks/data/split.py) gives methods the dev half only, and every
reported number reads the test half. They are cached under ``cache_dir/heldout_paraphrases`` by
everything that shaped them.

This sits above the method packages (tests/test_layers.py): it borrows UnSTAR's generator, which
the data layer may not import.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.cache import cached_json, fingerprint
from benchmarks.config import ConfigError
from benchmarks.data.records import UnlearningData
from benchmarks.evaluation.leak import LeakTest
from unstar.antisamples import AntiSampleGenerator, generation_code

log = logging.getLogger(__name__)


def wanted(data_cfg: Any) -> Any | None:
    """The data config's ``generate_paraphrases`` section where it asks for paraphrases."""
    section = data_cfg.get("generate_paraphrases")
    return section if section is not None and section.enabled else None


def fill_paraphrases(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: UnlearningData,
    cfg: Any,
    cache: Path,
) -> tuple[UnlearningData, dict[str, Any] | None]:
    """``data`` with paraphrases written for its forget questions that have none, and a record of
    the generation (yield, questions left without one); ``(data, None)`` where the data config
    does not ask for them. ``model`` must be the base model: the target has not been taught yet."""
    section = wanted(cfg.data)
    if section is None:
        return data, None
    if section.seed == cfg.seed:
        raise ConfigError(
            f"data.generate_paraphrases.seed={section.seed} is the job seed: UnSTAR samples its "
            "own training paraphrases from the job seed and could draw the held-out ones; set "
            "data.generate_paraphrases.seed to another value"
        )
    asked = [r for r in data.forget if not r.paraphrases]
    if not asked:
        return data, None
    knobs = OmegaConf.to_container(section, resolve=True)
    key = fingerprint(
        OmegaConf.to_container(cfg.model, resolve=True),
        knobs,
        generation_code(),
        [(r.id, r.subject, r.question, r.answer) for r in asked],
    )

    def generate() -> dict[str, Any]:
        generator = AntiSampleGenerator(
            model,
            tokenizer,
            SimpleNamespace(
                paraphrase=True,
                filter=True,
                n_paraphrases=section.n_candidates,
                max_paraphrases=section.keep,
                paraphrase_min_similarity=section.min_similarity,
                temperature=section.temperature,
                generation_batch_size=section.batch_size,
            ),
            LeakTest.from_config(section.leak),
            section.seed,
        )
        kept = generator.paraphrases(asked)
        return {
            "paraphrases": {r.id: ps for r, ps in zip(asked, kept, strict=True)},
            "yield": generator.report.paraphrase.as_dict(),
        }

    saved, reused = cached_json(cache / "heldout_paraphrases" / f"{key}.json", generate)
    written = saved["paraphrases"]
    data = data.with_records(
        replace(r, paraphrases=tuple(written[r.id])) if r.id in written else r for r in data.records
    )
    without = [rid for rid, ps in written.items() if not ps]
    if without:
        log.warning(
            "%d of %d forget questions got no held-out paraphrase (the filters rejected every "
            "candidate): the paraphrased views do not ask them (%s)",
            len(without),
            len(written),
            ", ".join(without[:5]) + (", ..." if len(without) > 5 else ""),
        )
    return data, {
        "questions": len(written),
        "paraphrases": sum(len(ps) for ps in written.values()),
        "without_paraphrase": without,
        "yield": saved["yield"],
        "seed": section.seed,
        "cached": reused,
    }
