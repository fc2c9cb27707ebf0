"""Write rows as sharded Parquet (or JSONL), atomically.

Every shard is written to a hidden temporary name in its destination folder, flushed to
disk, then renamed into place, so a reader (or a resumed run) only ever sees complete
shards: a process killed mid-write leaves at most a hidden ``.tmp`` file behind, which
readers ignore and the next write of that shard replaces.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import pyarrow as pa

from fineinstructions.records import row_to_dict, to_table

OutputFormat = Literal["parquet", "jsonl"]
SUFFIXES: dict[str, str] = {"parquet": ".parquet", "jsonl": ".jsonl"}


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then move the finished file to ``path``.

    The temporary file sits beside ``path`` (same filesystem, so the rename is atomic)
    and is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename still happened
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_table(table: pa.Table, path: str | Path, format: OutputFormat = "parquet") -> Path:
    """Write one Arrow table to ``path`` atomically."""
    if format == "parquet":
        import pyarrow.parquet as pq

        return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    if format == "jsonl":
        return atomic_write(path, lambda tmp: _write_jsonl(table.to_pylist(), tmp))
    raise ValueError(f"unknown output format {format!r}; use 'parquet' or 'jsonl'")


def write_json(data: Any, path: str | Path) -> Path:
    """Write a JSON document (stats, manifests) atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    return atomic_write(path, write)


def _write_jsonl(records: Iterable[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


class ShardWriter:
    """Buffer rows of one type and write them as numbered shards of ``rows_per_shard``.

    Shards are named ``{prefix}-{index:05d}.parquet`` (or ``.jsonl``). Use as a context
    manager: leaving the block normally writes the last, partial shard; leaving it with
    an exception does not, so no shard ever holds rows from an unfinished batch.
    """

    def __init__(
        self,
        directory: str | Path,
        row_type: type,
        *,
        format: OutputFormat = "parquet",
        rows_per_shard: int = 100_000,
        prefix: str = "part",
        start_index: int = 0,
    ) -> None:
        if format not in SUFFIXES:
            raise ValueError(f"unknown output format {format!r}; use 'parquet' or 'jsonl'")
        if rows_per_shard < 1:
            raise ValueError("rows_per_shard must be at least 1")
        self.directory = Path(directory)
        self.row_type = row_type
        self.format = format
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.next_index = start_index
        self.paths: list[Path] = []
        self.rows_written = 0
        self._buffer: list[Any] = []

    def write(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self._buffer.append(row)
            if len(self._buffer) >= self.rows_per_shard:
                self.flush()

    def flush(self) -> None:
        """Write buffered rows as one shard (nothing when the buffer is empty)."""
        if not self._buffer:
            return
        name = f"{self.prefix}-{self.next_index:05d}{SUFFIXES[self.format]}"
        if self.format == "parquet":
            write_table(to_table(self._buffer, self.row_type), self.directory / name, "parquet")
        else:
            rows = [row_to_dict(row) for row in self._buffer]
            atomic_write(self.directory / name, lambda tmp: _write_jsonl(rows, tmp))
        self.paths.append(self.directory / name)
        self.rows_written += len(self._buffer)
        self.next_index += 1
        self._buffer = []

    def close(self) -> list[Path]:
        self.flush()
        return self.paths

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._buffer = []


def prepare_output_dir(directory: str | Path, *, overwrite: bool) -> Path:
    """Make ``directory`` ready for a fresh output.

    A folder that already holds data files is refused unless ``overwrite``, in which case
    its data files (and any leftover temporary files) are removed first, so old shards
    can never mix with new ones.
    """
    from fineinstructions.errors import UserError
    from fineinstructions.io.formats import format_suffix

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    old = [p for p in directory.iterdir() if p.is_file() and (format_suffix(p) or p.name.endswith(".tmp"))]
    if old and not overwrite:
        raise UserError(
            f"{directory} already holds output ({len(old)} file(s), e.g. {old[0].name}).\n"
            "  fix: choose another output folder, or pass --overwrite to replace it"
        )
    for path in old:
        path.unlink()
    return directory
