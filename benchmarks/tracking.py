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
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.cache import atomic_write_text
from benchmarks.config import SECRET_KEY

log = logging.getLogger(__name__)

#: Results sections mirrored into the W&B summary, so dashboards and collect --wandb see them.
SUMMARY_SECTIONS = (
    "criteria",
    "criteria_submetrics",
    "attacks",
    "robustness",
    "tofu",
    "privacy",
    "fine_grained",
    "multiple_choice",
    "outcomes",
    "echo",
    "saved_model",
)
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


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write a results record atomically and verified (see :func:`atomic_write_text`), or raise
    an ``OSError`` that says the results are not saved and what to do."""
    try:
        atomic_write_text(path, json.dumps(results, indent=2, default=str))
    except OSError as err:
        raise OSError(
            err.errno,
            f"results NOT saved: could not write {path} ({err}); free disk space or fix the "
            "permissions of the output dir and re-run (an earlier file there is unchanged)",
        ) from err


def record(results: dict[str, Any]) -> dict[str, Any]:
    """What ``results.json`` holds: the results, credentials redacted, with package versions."""
    return {**results, "config": redact(results.get("config", {})), "versions": versions()}


class TrackingError(RuntimeError):
    """W&B could not start: the job records it in ``results.json`` and stops."""


class Tracker:
    """One job's W&B run; ``Tracker()`` tracks nothing (``tracking=none``, non-main processes)."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @classmethod
    def start(
        cls,
        tracking_cfg: Any,
        config: dict[str, Any],
        output_dir: Path,
        name: str,
        group: str | None,
    ) -> Tracker:
        """Open the job's W&B run, or raise :class:`TrackingError` saying how to fix it."""
        wandb_cfg = tracking_cfg.wandb
        if not wandb_cfg.enabled:
            return cls()
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        mode = os.environ.get("WANDB_MODE") or wandb_cfg.mode  # an empty variable is unset
        try:
            run = wandb.init(
                project=wandb_cfg.project,
                entity=wandb_cfg.get("entity"),
                group=wandb_cfg.get("group") or group,
                name=name,
                job_type="unlearn",
                tags=[str(config.get("method", {}).get("name", "?"))],
                config=redact(config),
                dir=str(output_dir),
                mode=mode,
                reinit="finish_previous",
            )
        except Exception as err:
            fix = (
                "set WANDB_API_KEY in the environment (or run `wandb login`), "
                "or use tracking=wandb_offline"
                if mode == "online"
                else f"check that {output_dir} is writable and has free space, or use tracking=none"
            )
            raise TrackingError(
                f"W&B could not start ({mode}): {type(err).__name__}: {err}; {fix}"
            ) from err
        return cls(run)

    def log(self, values: dict[str, float]) -> None:
        """Live values (training losses); a no-op without W&B."""
        if self.run is not None:
            self.run.log(values)

    def finish(self, results: dict[str, Any], path: Path | None) -> str | None:
        """Mirror the results (``path``: their file, None if it could not be written) to W&B, close
        the run and check an offline run reads back. Returns what went wrong, never raises: a
        tracking failure must not cost the results."""
        if self.run is None:
            return None
        run, self.run = self.run, None
        try:
            _mirror(run, results, path)
        except Exception as err:
            try:
                run.finish(exit_code=1)
            except Exception:
                log.debug("W&B run could not be closed after a failed mirror", exc_info=True)
            return f"W&B run not saved: {type(err).__name__}: {err}"
        if run.settings.mode != "offline":
            return None
        import wandb

        wandb.teardown()  # finish() can return before W&B's writer process has flushed the file
        return _check_offline_run(Path(run.settings.sync_file), results["status"])


def _mirror(run: Any, results: dict[str, Any], path: Path | None) -> None:
    import wandb

    summary: dict[str, Any] = {"status": results["status"], "job_key": results.get("job_key")}
    summary.update(flatten(results.get("metrics", {})))
    for section in SUMMARY_SECTIONS:
        summary.update(flatten(results.get(section, {}), section))
    summary.update(flatten(results.get("timings_s", {}), "time"))
    summary.update(flatten(results.get("method_metrics", {}), "method"))
    for key in ("error", "traceback"):
        if results.get(key):
            summary[key] = results[key]
    run.summary.update(summary)
    rows = results.get("generations", [])
    if rows:
        columns = sorted({key for row in rows for key in row})
        table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        run.log({"generations": table})
    if path is not None:
        artifact = wandb.Artifact(f"results-{run.id}", type="results")
        artifact.add_file(str(path))
        run.log_artifact(artifact)
    run.finish(exit_code=0 if results["status"] == "ok" else 1)


def _check_offline_run(run_file: Path, status: str) -> str | None:
    """Why the closed offline run file is unusable (cut by a full disk, say), or None if it reads
    back with the job's final status: W&B writes it in a separate process, which raises nothing
    here."""
    try:
        saved = read_offline_run(run_file.parent).get("summary", {}).get("status")
    except Exception as err:
        return f"W&B run file {run_file} cannot be read back: {type(err).__name__}: {err}"
    if saved != status:
        return (
            f"W&B run file {run_file} is incomplete (final status {saved!r}, not {status!r}): "
            "disk full?"
        )
    return None


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
