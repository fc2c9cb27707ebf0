"""Pieces of input files: how a corpus is cut into shards without being read into memory.

A :class:`Piece` is a contiguous part of one input file that a worker can read on its
own: a byte range of a plain JSONL file (whole lines, numbered as in the file, so error
messages name the real line), a range of row groups of a Parquet file, or a whole file
(gzip, CSV and URLs, which cannot be entered in the middle). :func:`plan_pieces` cuts a
file into pieces of about ``rows`` rows; planning a JSONL file scans its bytes for line
ends (no JSON is parsed, nothing is kept), a Parquet file only its footer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fineinstructions.errors import InputError
from fineinstructions.io.formats import (
    RawRecord,
    _read_jsonl,
    _read_parquet,
    format_suffix,
    is_url,
    read_raw,
)

SCAN_BLOCK = 8 << 20  # bytes read at once when looking for line ends
_RANGED_JSONL = (".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of one input file. ``kind``: ``"bytes"`` (``[start, stop)`` bytes of a JSONL
    file, whose first line is line ``first``), ``"row_groups"`` (``[start, stop)`` row
    groups of a Parquet file, whose first row is row ``first``) or ``"file"`` (all of it).
    ``rows`` is the number of lines or rows it holds, when known."""

    path: str
    kind: str = "file"
    start: int = 0
    stop: int = 0
    first: int = 1
    rows: int | None = None

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "start": self.start, "stop": self.stop, "first": self.first, "rows": self.rows}


def plan_pieces(path: str | Path, rows: int, limit: int | None = None) -> list[Piece]:
    """Cut one file into pieces of about ``rows`` rows each (see the module doc); with
    ``limit``, a JSONL file's pieces end after its first ``limit`` lines."""
    name = str(path)
    suffix = format_suffix(name)
    if is_url(name) or suffix is None:
        return [Piece(name)]
    if suffix in _RANGED_JSONL:
        return _plan_jsonl(Path(name), rows, limit)
    if suffix == ".parquet":
        return _plan_parquet(Path(name), rows)
    return [Piece(name)]


def _plan_jsonl(path: Path, rows: int, limit: int | None = None) -> list[Piece]:
    pieces: list[Piece] = []
    start, first, lines, offset = 0, 1, 0, 0
    last = b"\n"
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(path, "no such file", fix="check the path") from None
    with handle:
        while block := handle.read(SCAN_BLOCK):
            position = 0
            while True:
                need = rows - lines
                if limit is not None:
                    need = min(need, limit - (first - 1) - lines)
                    if need <= 0:
                        if lines:
                            pieces.append(Piece(str(path), "bytes", start, offset + position, first, lines))
                        return pieces
                # Find the need-th line end in this block, if it has that many.
                end = position - 1
                for _ in range(need):
                    end = block.find(b"\n", end + 1)
                    if end < 0:
                        break
                if end < 0:
                    lines += block.count(b"\n", position)
                    break
                stop = offset + end + 1
                pieces.append(Piece(str(path), "bytes", start, stop, first, lines + need))
                first += lines + need
                start, lines, position = stop, 0, end + 1
            offset += len(block)
            last = block[-1:]
    if offset > start:
        lines += last != b"\n"  # a last line without its newline
        pieces.append(Piece(str(path), "bytes", start, offset, first, lines))
    return pieces or [Piece(str(path), "bytes", 0, 0, 1, 0)]


def _plan_parquet(path: Path, rows: int) -> list[Piece]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(path, f"not a readable Parquet file ({error})", fix="write the file again") from None
    pieces: list[Piece] = []
    start, first, count = 0, 1, 0
    for group in range(meta.num_row_groups):
        count += meta.row_group(group).num_rows
        if count >= rows:
            pieces.append(Piece(str(path), "row_groups", start, group + 1, first, count))
            start, first, count = group + 1, first + count, 0
    if start < meta.num_row_groups or not pieces:
        pieces.append(Piece(str(path), "row_groups", start, meta.num_row_groups, first, count))
    return pieces


def _byte_lines(path: Path, start: int, stop: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        left = stop - start
        for line in handle:
            if left <= 0:
                return
            left -= len(line)
            yield line


def read_piece(piece: Piece) -> Iterator[RawRecord]:
    """The raw records of one piece, numbered as in the whole file."""
    if piece.kind == "bytes":
        path = Path(piece.path)
        if not path.is_file():
            raise InputError(path, "no such file", fix="check the path")
        yield from _read_jsonl(path, _byte_lines(path, piece.start, piece.stop), piece.first)
    elif piece.kind == "row_groups":
        yield from _read_parquet(Path(piece.path), row_groups=(piece.start, piece.stop), first=piece.first)
    else:
        yield from read_raw(piece.path)
