"""Low-level readers: one function per file format, each yielding raw records.

A raw reader yields ``(location, record)`` pairs, where ``location`` is ``"line N"`` or
``"row N"`` (from 1) and ``record`` is a dict, or an :class:`InputError` for a row that
cannot be parsed (so a caller may choose to skip it and go on). Problems with the file
as a whole (missing, truncated, not the format its name says) are raised.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from fineinstructions.errors import InputError

RawRecord = tuple[str, "dict | InputError"]

_UTF8_FIX = "convert the file to UTF-8 (for example: iconv -f latin1 -t utf-8 IN > OUT)"


def _decoded_lines(path: Path, handle: Iterable[bytes], first: int = 1) -> Iterator[tuple[int, "str | InputError"]]:
    """Lines of a byte stream decoded as UTF-8, numbered from ``first``, newline kept."""
    for number, raw in enumerate(handle, start=first):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, InputError(
                path,
                f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
                location=f"line {number}",
                fix=_UTF8_FIX,
            )
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield number, line


def _read_jsonl(path: Path, handle: Iterable[bytes], first: int = 1) -> Iterator[RawRecord]:
    for number, line in _decoded_lines(path, handle, first):
        location = f"line {number}"
        if isinstance(line, InputError):
            yield location, line
            continue
        if not line.strip():
            continue  # blank lines are not rows
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield location, InputError(
                path,
                # (json's own message may end in "at": "Unterminated string starting at")
                f"invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno})",
                location=location,
                fix="each line of a JSONL file must be one complete JSON object",
            )
            continue
        if not isinstance(record, dict):
            yield location, InputError(
                path,
                f"expected a JSON object, got a JSON {type(record).__name__}",
                location=location,
                fix='each line of a JSONL file must be one object, like {"text": "..."}',
            )
            continue
        yield location, record


def _read_csv(path: Path, handle: IO[bytes]) -> Iterator[RawRecord]:
    def text_lines() -> Iterator[str]:
        for _, line in _decoded_lines(path, handle):
            if isinstance(line, InputError):
                # A CSV record may span lines, so a line that does not decode cannot be
                # skipped on its own: the file as a whole needs converting.
                raise line
            yield line

    reader = csv.DictReader(text_lines())
    try:
        for record in reader:
            location = f"line {reader.line_num}"
            if None in record:
                columns = len(reader.fieldnames or [])
                yield location, InputError(
                    path,
                    f"the row has {columns + len(record[None])} values but the header "
                    f"names {columns} columns",
                    location=location,
                    fix="quote values that contain commas",
                )
                continue
            yield location, dict(record)
    except csv.Error as error:
        raise InputError(
            path,
            f"malformed CSV ({error})",
            location=f"line {reader.line_num}",
            fix='quote values that hold commas, quotes or newlines ("..."), doubling inner quotes',
        ) from None


def _read_parquet(
    path: Path, handle: IO[bytes] | None = None, row_groups: tuple[int, int] | None = None, first: int = 1
) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle if handle is not None else path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(
            path,
            f"not a readable Parquet file ({error})",
            fix="check that the file is a complete Parquet file, or write it again",
        ) from None
    number = first - 1
    groups = list(range(*row_groups)) if row_groups is not None else None
    for batch in parquet.iter_batches(batch_size=4096, row_groups=groups):
        for record in batch.to_pylist():
            number += 1
            yield f"row {number}", record


_FORMATS: dict[str, tuple[Callable[..., Iterator[RawRecord]], bool]] = {
    # suffix -> (reader, gzip-compressed)
    ".jsonl": (_read_jsonl, False),
    ".ndjson": (_read_jsonl, False),
    ".jsonl.gz": (_read_jsonl, True),
    ".ndjson.gz": (_read_jsonl, True),
    ".csv": (_read_csv, False),
    ".csv.gz": (_read_csv, True),
}
SUPPORTED_SUFFIXES = (*_FORMATS, ".parquet")


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is an fsspec URL (``s3://…``, ``gs://…``, ``hf://…``), not a local path."""
    return "://" in str(path)


def file_name(path: str | Path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else Path(path).name


def format_suffix(path: str | Path) -> str | None:
    """The supported suffix ``path`` ends with (``.jsonl.gz`` before ``.gz``), or None."""
    name = file_name(path).lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def read_raw(path: Path | str) -> Iterator[RawRecord]:
    """Every raw record of one file (a local path or an fsspec URL), in order."""
    if is_url(path):
        yield from _read_url(str(path))
        return
    suffix = format_suffix(path)
    if suffix is None:
        raise InputError(
            path,
            "unsupported file type",
            fix=f"use one of {', '.join(SUPPORTED_SUFFIXES)}",
        )
    if suffix == ".parquet":
        yield from _read_parquet(path)
        return
    path = Path(path)
    reader, compressed = _FORMATS[suffix]
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            yield from reader(path, handle)
    except FileNotFoundError:
        raise InputError(path, "no such file", fix="check the path") from None
    except gzip.BadGzipFile as error:
        raise InputError(
            path,
            f"not a valid gzip file ({error})",
            fix="compress the file with gzip, or drop the .gz from its name if it is not compressed",
        ) from None
    except (EOFError, zlib.error) as error:
        raise InputError(
            path,
            f"the compressed file is truncated or corrupt ({error})",
            fix="copy or download the file again (gzip -t FILE checks it)",
        ) from None


def _read_url(url: str) -> Iterator[RawRecord]:
    """An fsspec URL's records: the file is streamed, never copied whole."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the ray extra and datasets
        raise InputError(url, "reading URLs needs the Python package 'fsspec'", fix="pip install fsspec") from None
    suffix = format_suffix(url)
    if suffix is None:
        raise InputError(url, "unsupported file type", fix=f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        with fsspec.open(url, "rb") as handle:
            if suffix == ".parquet":
                yield from _read_parquet(url, handle)  # type: ignore[arg-type]
                return
            reader, compressed = _FORMATS[suffix]
            stream = gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle
            yield from reader(url, stream)
    except FileNotFoundError:
        raise InputError(url, "no such file", fix="check the URL") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise InputError(url, f"the compressed file is truncated or corrupt ({error})") from None
