"""A stage's output folder: one data file and one completion marker per finished shard.

For each shard, the worker that ran it writes, in this order and each atomically
(temporary name, fsync, rename):

1. its rows, ``part-NNNNN.parquet`` (no file when the shard kept nothing);
2. its rejects, ``.shards/NNNNN.rejects.jsonl``;
3. its marker, ``.shards/NNNNN.json``: what the shard was made from and its counts.

A shard is finished exactly when its marker exists, so a process killed at any point
(``kill -9`` included) leaves finished shards whole; the next run removes what an
unfinished shard left and redoes it under the same names, so no row is lost or
duplicated, and a shard run twice (a worker retried on a cluster) writes the same files
twice. ``.shards/run.json`` records what the output is made from (inputs and the
settings that change rows) and ``.shards/plan.json`` the shards, so a resume runs the
same shards even if the shard size was changed, and a different job is never resumed
into the folder by mistake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from fineinstructions.errors import UserError
from fineinstructions.execution.outputs import (
    STAGE_FOLDER,
    changed_inputs,
    clear,
    refuse_changed_inputs,
)
from fineinstructions.io.formats import format_suffix
from fineinstructions.io.readers import input_files
from fineinstructions.io.writers import SUFFIXES, atomic_write, write_json, write_table
from fineinstructions.records import RejectRow, row_to_dict, to_table

MARKERS = ".shards"
# 3: markers name the input piece and files of their shard; workers write their shards.
LEDGER_VERSION = 3


def part_name(shard: int, format: str = "parquet") -> str:
    return f"part-{shard:05d}{SUFFIXES[format]}"


class ShardFolder:
    """The finished shards of one stage's output folder."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.markers = self.directory / MARKERS

    # -- the driver -------------------------------------------------------------------

    def prepare(
        self, fingerprint: dict[str, Any], *, overwrite: bool = False, input_files: dict[str, list[int]] | None = None
    ) -> None:
        """Start or resume: refuse output of another job, or of inputs that changed since
        it was started (``input_files``: size and time of each input file), unless
        ``overwrite``, which clears what this package wrote there."""
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"{self.directory} exists and is not a folder")
        fingerprint = json.loads(json.dumps(dict(fingerprint, ledger=LEDGER_VERSION), sort_keys=True, default=str))
        run_file = self.markers / "run.json"
        if overwrite:
            clear(self.directory, STAGE_FOLDER)
        if run_file.exists():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if previous != fingerprint:
                changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
                raise UserError(
                    f"{self.directory} holds output of a different job (it differs in: {', '.join(changed)}).\n"
                    "  fix: choose another output folder, or pass --overwrite to start it again"
                )
            recorded = self.markers / "inputs.json"
            changed = changed_inputs(json.loads(recorded.read_text(encoding="utf-8"))) if recorded.exists() else []
            if changed and not self.finished():
                clear(self.directory, STAGE_FOLDER)  # nothing was finished: plan again from the new inputs
            else:
                refuse_changed_inputs(changed, self.directory)
        elif self.directory.exists() and any(p.is_file() and format_suffix(p) for p in self.directory.iterdir()):
            raise UserError(
                f"{self.directory} holds data files that this command did not write (they would be read "
                "back as its output); --overwrite deletes only what fineinstructions wrote.\n"
                "  fix: choose another output folder, or move those files out of it"
            )
        self.markers.mkdir(parents=True, exist_ok=True)
        self._fingerprint = fingerprint
        self._input_files = input_files

    def remember(self) -> None:
        """Record the fingerprint :meth:`prepare` checked, once the shards are planned (a
        plan that fails, such as on a wrong input, leaves the folder free for the fix)."""
        run_file = self.markers / "run.json"
        if not run_file.exists():
            if self._input_files is not None:
                write_json(self._input_files, self.markers / "inputs.json")
            write_json(self._fingerprint, run_file)

    def plan(self, make: Any) -> Any:
        """The shards of this folder: those planned by the first run, or ``make()``'s."""
        path = self.markers / "plan.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8")), True
        plan = make()
        write_json(plan, path)
        return plan, False

    def finished(self) -> dict[int, dict]:
        """The markers of every finished shard, by shard number."""
        out = {}
        for path in sorted(self.markers.glob("[0-9]*.json")):
            marker = json.loads(path.read_text(encoding="utf-8"))
            out[int(marker["shard"])] = marker
        return out

    def remove_unfinished(self, finished: Iterable[int]) -> None:
        """Remove what shards without a marker left (data, rejects, temporary files)."""
        done = set(finished)
        for path in list(self.directory.glob("part-*")) + list(self.markers.glob("[0-9]*")):
            digits = path.name.removeprefix("part-")[:5]
            if digits.isdigit() and int(digits) not in done:
                path.unlink()
        for path in [*self.directory.glob(".part-*.tmp"), *self.markers.glob(".*.tmp")]:
            path.unlink()

    def join_rejects(self, path: str | Path, first: Iterable[Path] = ()) -> Path:
        """Every shard's rejects, in shard order (after the files ``first``), in one file."""
        parts = [*first, *sorted(self.markers.glob("[0-9]*.rejects.jsonl"))]

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as out:
                for part in parts:
                    if Path(part).exists():
                        out.write(Path(part).read_text(encoding="utf-8"))

        return atomic_write(path, write)

    # -- a worker ---------------------------------------------------------------------

    def commit(
        self,
        shard: int,
        rows: Sequence[Any],
        row_type: type,
        rejects: Iterable[RejectRow],
        marker: dict[str, Any],
        *,
        format: str = "parquet",
    ) -> dict[str, Any]:
        """Write one finished shard: rows, then rejects, then the marker (returned)."""
        data = self.directory / part_name(shard, format)
        if rows:
            write_table(to_table(list(rows), row_type), data, format)  # type: ignore[arg-type]
        else:
            data.unlink(missing_ok=True)
        lines = "".join(json.dumps(row_to_dict(r), ensure_ascii=False) + "\n" for r in rejects)
        atomic_write(self.markers / f"{shard:05d}.rejects.jsonl", lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        marker = dict(marker, shard=shard, rows=len(rows), file=data.name if rows else None)
        write_json(marker, self.markers / f"{shard:05d}.json")
        return marker


def data_files(paths: Sequence[str | Path]) -> list[Path]:
    """The data files of ``paths``; a stage's output folder with no data file (every row
    was skipped or failed) is an empty input, not an error."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not any(format_suffix(p) for p in path.iterdir() if p.is_file()):
            continue
        files.extend(input_files([path]))
    return files


def upstream_markers(folder: str | Path) -> dict[int, dict] | None:
    """The finished shards of a stage folder this package wrote, or ``None`` for a folder
    without markers (rows written some other way)."""
    markers = Path(folder) / MARKERS
    if not (markers / "run.json").exists():
        return None
    return ShardFolder(folder).finished()
