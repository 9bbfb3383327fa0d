"""The record of a job: ``results.json`` in its output dir, and the same logged to W&B.

W&B runs offline by default (``WANDB_MODE=offline``; ``wandb sync`` uploads later). Offline runs
can be read back without a server (:func:`read_offline_run`), which the tests and
``analysis.collect`` use. Secrets never reach a record: config values under keys that look like
credentials are redacted, and keys come only from the environment.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.cache import atomic_write_text

log = logging.getLogger(__name__)

# A credential word ending the key (``hf_token``, ``OPENAI_API_KEY``), not inside one
# (``max_new_tokens``, ``tokenizer`` are settings the record must keep).
SECRET_KEY = re.compile(
    r"(^|[\W_])(api_?key|access_?key|secret_?key|token|secret|password|passwd)$", re.IGNORECASE
)
#: Results sections mirrored into the W&B summary, so dashboards and collect --wandb see them.
SUMMARY_SECTIONS = ("criteria", "criteria_submetrics", "attacks", "tofu", "privacy", "fine_grained")
VERSIONED = ("torch", "transformers", "peft", "trl", "sentence-transformers", "hydra-core", "wandb")


def redact(value: Any) -> Any:
    """A copy of a nested config with credential-like values replaced by ``***``."""
    if isinstance(value, dict):
        return {
            k: "***" if SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


class Tracker:
    """One job's W&B run (if enabled) and its results file."""

    def __init__(
        self,
        tracking_cfg: Any,
        config: dict[str, Any],
        output_dir: Path,
        name: str,
        group: str | None,
    ) -> None:
        self.output_dir = output_dir
        self.run = None
        wandb_cfg = tracking_cfg.wandb
        if not wandb_cfg.enabled:
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=wandb_cfg.project,
            entity=wandb_cfg.get("entity"),
            group=wandb_cfg.get("group") or group,
            name=name,
            job_type="unlearn",
            tags=[str(config.get("method", {}).get("name", "?"))],
            config=redact(config),
            dir=str(output_dir),
            mode=os.environ.get("WANDB_MODE", wandb_cfg.mode),
            reinit="finish_previous",
        )

    def log(self, values: dict[str, float]) -> None:
        """Live values (training losses); a no-op without W&B."""
        if self.run is not None:
            self.run.log(values)

    def finish(self, results: dict[str, Any]) -> Path:
        """Write ``results.json`` atomically, mirror it to W&B and close the run."""
        results = {**results, "config": redact(results.get("config", {})), "versions": versions()}
        path = self.output_dir / "results.json"
        atomic_write_text(path, json.dumps(results, indent=2, default=str))
        if self.run is not None:
            self._mirror(results, path)
        return path

    def _mirror(self, results: dict[str, Any], path: Path) -> None:
        import wandb

        summary: dict[str, Any] = {"status": results["status"]}
        summary.update(flatten(results.get("metrics", {})))
        for section in SUMMARY_SECTIONS:
            summary.update(flatten(results.get(section, {}), section))
        summary.update(flatten(results.get("timings_s", {}), "time"))
        summary.update(flatten(results.get("method_metrics", {}), "method"))
        for key in ("error", "traceback"):
            if results.get(key):
                summary[key] = results[key]
        self.run.summary.update(summary)
        rows = results.get("generations", [])
        if rows:
            columns = sorted({key for row in rows for key in row})
            table = wandb.Table(
                columns=columns, data=[[row.get(c) for c in columns] for row in rows]
            )
            self.run.log({"generations": table})
        artifact = wandb.Artifact(f"results-{self.run.id}", type="results")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if results["status"] == "ok" else 1)


def _log_records(path: Path):
    """The raw records of a W&B run file (LevelDB log format behind a 7-byte W&B header)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def _item_key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Config, group, summary and history of an offline W&B run directory, read locally."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = list(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "group": None, "name": None}
    for raw in _log_records(files[0]):
        record = pb.Record.FromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(
                group=record.run.run_group, name=record.run.display_name, id=record.run.run_id
            )
            updates = record.run.config.update
        elif kind == "config":
            updates = record.config.update
        elif kind == "summary":
            run["summary"].update(
                {_item_key(i): json.loads(i.value_json) for i in record.summary.update}
            )
            continue
        elif kind == "history":
            run["history"].append(
                {_item_key(i): json.loads(i.value_json) for i in record.history.item}
            )
            continue
        else:
            continue
        for item in updates:
            value = json.loads(item.value_json)
            run["config"][_item_key(item)] = (
                value.get("value", value) if isinstance(value, dict) else value
            )
    return run
