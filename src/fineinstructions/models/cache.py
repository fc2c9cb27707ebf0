"""A request cache around any backend, in one SQLite file.

The key is a hash of the backend's identity (kind and exact model) and the full request,
sampling settings, seed and prompt version included: a hit is a request this model has
already answered, and it returns exactly what the model returned then. Distinct seeds
are distinct keys, so sampling stays diverse. Transient failures (:attr:`ErrorKind.BACKEND_ERROR`) are
not cached, so a re-run retries them.

The file uses SQLite's write-ahead log: many processes may read while one writes. Each
process should open its own :class:`CachedLLM`.

Across the machines of a cluster (the Ray executor) no SQLite file is written by two
processes: each worker writes its own file in ``STAGE.cache.d/`` and reads the stage's
main cache read-only beside it (``shared=``). :func:`merge_caches` folds the workers'
files into the main cache when the stage finishes, and before it starts again after a
crash, so a completed call is never made twice across runs.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Sequence

from fineinstructions.models.llm import LLM, Completion, ErrorKind, Request, request_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    completion TEXT NOT NULL
)
"""


def _forwarded(name: str, default: Any) -> property:
    """An attribute of :class:`CachedLLM` read from the backend it wraps."""
    return property(lambda self: getattr(self.backend, name, default), doc=f"The backend's ``{name}``.")


class CachedLLM:
    """Wraps ``backend``; answers repeated requests from ``path`` without calling it."""

    def __init__(
        self,
        backend: LLM,
        path: str | Path,
        *,
        commit_every: int | None = None,
        shared: str | Path | None = None,
    ) -> None:
        self.backend = backend
        # Completions are stored as they come back, this many requests at a time, so a
        # process killed in the middle of a long batch keeps what had completed. The
        # backend says how many it can take at once without slowing down.
        if commit_every is None:
            commit_every = getattr(backend, "checkpoint_every", None)
        self.commit_every = commit_every
        self.kind = getattr(backend, "kind", None)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        if shared is not None:
            # A worker's own file, on a filesystem other machines may share: one writer,
            # no shared-memory index, so nothing depends on network-filesystem locks.
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._shared: sqlite3.Connection | None = None
        if shared is not None and Path(shared).exists():
            # Read-only and immutable: no lock is taken, as the file does not change
            # while workers run (only the driver writes it, between runs of the stage).
            uri = Path(shared).resolve().as_uri() + "?mode=ro&immutable=1"
            self._shared = sqlite3.connect(uri, uri=True, check_same_thread=False)

    @property
    def identity(self) -> str:
        return self.backend.identity

    # What the backend can do (read through models.llm.capabilities) and how it counts
    # tokens, as the backend declares them.
    constrains_json_schema = _forwarded("constrains_json_schema", False)
    constrains_gbnf = _forwarded("constrains_gbnf", False)
    constrains_regex = _forwarded("constrains_regex", False)
    counts_tokens_locally = _forwarded("counts_tokens_locally", False)
    caches_prefixes = _forwarded("caches_prefixes", False)
    reports_logprobs = _forwarded("reports_logprobs", False)
    checkpoint_every = _forwarded("checkpoint_every", None)
    token_count_method = _forwarded("token_count_method", "the backend's count_tokens")

    def load(self) -> None:
        self.backend.load()

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        identity = self.backend.identity
        keys = [request_key(identity, r) for r in requests]
        found = self._lookup(set(keys))
        missing = [i for i, key in enumerate(keys) if key not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        results: list[Completion | None] = [
            Completion.from_json(found[key]) if key in found else None for key in keys
        ]
        step = self.commit_every or len(missing) or 1
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            fresh = self.backend.generate([requests[i] for i in chunk])
            rows = []
            for i, completion in zip(chunk, fresh, strict=True):
                results[i] = completion
                if completion.error_kind not in (ErrorKind.BACKEND_ERROR, ErrorKind.UNAVAILABLE):
                    rows.append((keys[i], identity, completion.to_json()))
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO completions (key, model, completion) VALUES (?, ?, ?)",
                    rows,
                )
                self._db.commit()
        return results  # type: ignore[return-value]

    def _lookup(self, keys: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ordered = list(keys)
        with self._lock:
            for db in (self._shared, self._db):
                if db is None:
                    continue
                for start in range(0, len(ordered), 500):  # stay under SQLite's variable limit
                    chunk = ordered[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    found.update(
                        db.execute(
                            f"SELECT key, completion FROM completions WHERE key IN ({marks})", chunk
                        ).fetchall()
                    )
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._shared is not None:
                self._shared.close()
        self.backend.close()


def _busy(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (by the primary result code): another process holds
    the file."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def merge_caches(main: str | Path, folder: str | Path) -> int:
    """Fold every worker cache file in ``folder`` into ``main`` and delete them; returns
    the completions added. Safe to run again after a crash: a file is deleted only after
    its rows are committed to ``main``, and adding a row twice is a no-op."""
    folder = Path(folder)
    parts = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    main = Path(main)
    if not parts and not main.exists():
        return 0
    main.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(main, timeout=10)
    added = 0
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        for part in parts:
            before = db.total_changes
            try:
                db.execute("ATTACH DATABASE ? AS part", (str(part),))
            except sqlite3.OperationalError as error:
                if not _busy(error):
                    raise
                continue  # a worker still holds it (its job is being torn down): next time
            try:
                has_table = db.execute(
                    "SELECT 1 FROM part.sqlite_master WHERE type='table' AND name='completions'"
                ).fetchone()
                if has_table:
                    db.execute("INSERT OR IGNORE INTO completions SELECT key, model, completion FROM part.completions")
                db.commit()
            except sqlite3.OperationalError as error:
                if not _busy(error):
                    raise
                db.rollback()  # as above: next time
                continue
            finally:
                db.execute("DETACH DATABASE part")
            added += db.total_changes - before
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(part) + suffix).unlink(missing_ok=True)
        # Fold the log into the file (a killed run may have left one), so workers can
        # open it immutable and read-only.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    try:
        folder.rmdir()
    except OSError:
        pass
    return added
