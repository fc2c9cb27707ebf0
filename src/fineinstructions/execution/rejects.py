"""A rejects file: one JSON line per rejected input, written as it comes.

Lines go to ``NAME.tmp`` and are flushed per batch; closing renames the file to its
final name, so a finished rejects file is always complete. A run that dies leaves only
the ``.tmp`` file, which the next run replaces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from fineinstructions.records import RejectRow, row_to_dict


class RejectsFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._handle = open(self._tmp, "w", encoding="utf-8")
        self.count = 0

    def write(self, rows: Iterable[RejectRow]) -> None:
        for row in rows:
            self._handle.write(json.dumps(row_to_dict(row), ensure_ascii=False) + "\n")
            self.count += 1
        self._handle.flush()

    def close(self) -> Path:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self) -> "RejectsFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._handle.close()
