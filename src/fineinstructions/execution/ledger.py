"""Resumable sharded output: one data file and one completion marker per finished shard.

A stage that calls a model cuts its input into numbered shards (a fixed number of
documents, or one input file each) in a deterministic order. For each shard it writes,
in this order and each atomically:

1. the shard's rows, ``part-NNNNN.parquet`` (no file when the shard kept nothing);
2. its rejects, ``.shards/NNNNN.rejects.jsonl``;
3. its marker, ``.shards/NNNNN.json``, holding the shard's counts.

A shard is finished exactly when its marker exists. A process killed at any point
(``kill -9`` included) leaves finished shards whole and an unfinished one without a
marker; the next run skips the finished shards and redoes the other one, writing the
same file names, so no row is lost or duplicated. Model calls that completed before the
kill come back from the request cache. ``.shards/run.json`` records what the output was
made from (inputs and settings), so a different job is never resumed into it by mistake.

A marker also lists the ``inputs`` its shard covered (document or pair ids). A stage
resumes by skipping those inputs and numbering new shards after the last finished one,
so the shards of a resumed run need not be cut as the first run cut them: a Ray cluster
may batch rows differently each time, and still no row is lost or written twice.
When every shard is done, :meth:`ShardLedger.finish` joins the rejects into one file
beside the output folder.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from fineinstructions.errors import UserError
from fineinstructions.io.formats import format_suffix
from fineinstructions.io.readers import input_files
from fineinstructions.io.writers import SUFFIXES, atomic_write, write_json, write_table
from fineinstructions.records import RejectRow, row_to_dict, to_table

MARKERS = ".shards"
# Markers list the inputs of their shard (version 2); a resume relies on it.
LEDGER_VERSION = 2


class ShardLedger:
    """The finished shards of one stage's output folder."""

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"{self.directory} exists and is not a folder")
        self.markers = self.directory / MARKERS
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        run_file = self.markers / "run.json"
        if overwrite and self.directory.exists():
            self._clear()
        elif run_file.exists():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if previous != self.fingerprint:
                changed = sorted(k for k in set(previous) | set(self.fingerprint) if previous.get(k) != self.fingerprint.get(k))
                raise UserError(
                    f"{self.directory} holds output of a different job (it differs in: {', '.join(changed)}).\n"
                    "  fix: choose another output folder, or pass --overwrite to start it again"
                )
        elif self.directory.exists() and any(
            p.is_file() and format_suffix(p) for p in self.directory.iterdir()
        ):
            raise UserError(
                f"{self.directory} already holds output that this command did not write.\n"
                "  fix: choose another output folder, or pass --overwrite to replace it"
            )
        self.markers.mkdir(parents=True, exist_ok=True)
        if not run_file.exists():
            write_json(self.fingerprint, run_file)

    def _clear(self) -> None:
        for path in self.directory.iterdir():
            if path.name == MARKERS:
                shutil.rmtree(path)
            elif path.is_file() and (format_suffix(path) or path.name.endswith(".tmp") or path.name == "stats.json"):
                path.unlink()

    def start(self) -> tuple[set[str], int]:
        """Before (re)starting: remove what unfinished shards left (data or rejects files
        without a marker); return the inputs finished shards covered and the next shard
        number."""
        finished = {int(p.name[:5]) for p in self.markers.glob("[0-9]*.json")}
        for path in list(self.directory.glob("part-*")) + list(self.markers.glob("*.rejects.jsonl")):
            digits = path.name.removeprefix("part-")[:5]
            if digits.isdigit() and int(digits) not in finished:
                path.unlink()
        done: set[str] = set()
        for marker in self.finished():
            done.update(marker.get("inputs", ()))
        return done, max(finished, default=-1) + 1

    def marker(self, shard: int) -> Path:
        return self.markers / f"{shard:05d}.json"

    def done(self, shard: int) -> dict | None:
        """The counts of a finished shard, or ``None`` when it is not finished."""
        path = self.marker(shard)
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def commit(
        self,
        shard: int,
        rows: Sequence[Any],
        row_type: type,
        rejects: Iterable[RejectRow],
        counts: dict[str, Any],
        *,
        format: str = "parquet",
    ) -> None:
        """Write one finished shard: rows, then rejects, then the marker."""
        data = self.directory / f"part-{shard:05d}{SUFFIXES[format]}"
        if rows:
            write_table(to_table(list(rows), row_type), data, format)  # type: ignore[arg-type]
        else:
            data.unlink(missing_ok=True)
        lines = "".join(json.dumps(row_to_dict(r), ensure_ascii=False) + "\n" for r in rejects)
        atomic_write(self.markers / f"{shard:05d}.rejects.jsonl", lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        write_json(dict(counts, shard=shard, rows=len(rows)), self.marker(shard))

    def finished(self) -> list[dict]:
        """The markers of every finished shard, in shard order."""
        return [
            json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(self.markers.glob("[0-9]*.json"))
        ]

    def finish(self, rejects_path: str | Path) -> Path:
        """Join every shard's rejects, in shard order, into ``rejects_path``."""
        parts = sorted(self.markers.glob("*.rejects.jsonl"))

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as out:
                for part in parts:
                    out.write(part.read_text(encoding="utf-8"))

        return atomic_write(rejects_path, write)


def data_files(paths: Sequence[str | Path]) -> list[Path]:
    """The data files of ``paths``; a stage's output folder with no data file (every row
    was skipped or failed) is an empty input, not an error."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not any(format_suffix(p) for p in path.iterdir() if p.is_file()):
            continue
        files.extend(input_files([path]))
    return files


def add_counts(markers: Iterable[dict], keys: Sequence[str]) -> dict[str, Any]:
    """Sum the numeric ``keys`` and the ``skipped``/``failed`` counters of shard markers."""
    total: dict[str, Any] = {key: 0 for key in keys}
    skipped: Counter = Counter()
    failed: Counter = Counter()
    for marker in markers:
        for key in keys:
            total[key] += marker.get(key, 0) or 0
        skipped.update(marker.get("skipped", {}))
        failed.update(marker.get("failed", {}))
    total["skipped"] = dict(skipped.most_common())
    total["failed"] = dict(failed.most_common())
    return total
