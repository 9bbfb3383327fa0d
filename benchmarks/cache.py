"""Content-addressed caching and atomic writes: a kill mid-write never leaves half a file."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts: the cache key of whatever they shaped."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def files_fingerprint(root: Path, files: Iterable[Path]) -> str:
    """A short stable hash of files' names (relative to ``root``) and contents: the version of the
    code that made a cached result."""
    return fingerprint(
        sorted(
            (str(f.relative_to(root)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files
        )
    )


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, read it back, then rename it over ``path``.

    A failed write (full disk, a kill) leaves the old file, never half of the new one; the read-back
    catches a file system that cuts a file without an error. The file gets the usual permissions
    (mkstemp's are owner-only), so shared sweep dirs stay readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if Path(tmp).read_text("utf-8") != text:
            raise OSError(f"{tmp} read back differs from what was written to it (disk full?)")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp dir to fill; it becomes ``target`` only if the block finishes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_json(
    path: Path, compute: Callable[[], Any], *, keep: Callable[[Any], bool] = lambda _: True
) -> tuple[Any, bool]:
    """The JSON value saved at ``path``, else ``compute()`` saved there (if ``keep`` accepts it);
    and whether it came from the cache. A damaged file is computed anew, not trusted."""
    if path.exists():
        try:
            return json.loads(path.read_text("utf-8")), True
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            log.warning("Ignoring damaged cache entry %s (%s)", path, err)
    value = compute()
    if keep(value):
        atomic_write_text(path, json.dumps(value))
    return value, False
