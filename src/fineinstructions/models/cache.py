"""A request cache around any backend, in one SQLite file.

The key is a hash of the backend's identity (kind and exact model) and the full request,
sampling settings, seed and prompt version included: a hit is a request this model has
already answered, and it returns exactly what the model returned then. Distinct seeds
are distinct keys, so sampling stays diverse. Transient failures (``backend_error``) are
not cached, so a re-run retries them.

The file uses SQLite's write-ahead log: many processes may read while one writes. Each
process should open its own :class:`CachedLLM`.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from fineinstructions.models.llm import BACKEND_ERROR, LLM, Completion, Request, request_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    completion TEXT NOT NULL
)
"""


class CachedLLM:
    """Wraps ``backend``; answers repeated requests from ``path`` without calling it."""

    def __init__(self, backend: LLM, path: str | Path, *, commit_every: int | None = None) -> None:
        self.backend = backend
        # Completions are stored as they come back, this many requests at a time, so a
        # process killed in the middle of a long batch keeps what had completed. A
        # backend that runs requests one at a time loses nothing by going one by one.
        if commit_every is None:
            commit_every = {"llama_cpp": 1, "fake": 1}.get(backend.kind)
            if backend.kind == "openai":
                commit_every = 4 * getattr(backend, "max_concurrency", 16)
        self.commit_every = commit_every
        self.kind = backend.kind
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    @property
    def identity(self) -> str:
        return self.backend.identity

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
                if completion.error_kind != BACKEND_ERROR:
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
            for start in range(0, len(ordered), 500):  # stay under SQLite's variable limit
                chunk = ordered[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    self._db.execute(
                        f"SELECT key, completion FROM completions WHERE key IN ({marks})", chunk
                    ).fetchall()
                )
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.backend.close()
