"""Read queries and documents from JSONL, JSONL.gz, CSV and Parquet files.

Field names are configurable (:class:`FieldMapping`). A query row may instead be a chat:
a ``messages`` list of ``{role, content}`` objects, of which only the user turns become
queries. Rows with an empty or whitespace-only text are skipped and counted; rows that
are wrong (invalid JSON, a missing or non-string text, bytes that are not UTF-8) raise an
:class:`InputError` naming the file, line or row, and field, unless ``on_error="skip"``,
which counts and keeps them in :class:`ReadStats` instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

from fineinstructions.errors import InputError
from fineinstructions.io.formats import (
    SUPPORTED_SUFFIXES,
    file_name,
    format_suffix,
    is_url,
    read_raw,
)
from fineinstructions.records import DocumentRow, QueryRow, from_table

OnError = Literal["raise", "skip"]
USER_ROLES = frozenset({"user", "human"})
MAX_KEPT_ERRORS = 1000
# Skip reasons: rows that are valid but hold nothing to use.
EMPTY_TEXT = "empty_text"
NO_USER_TURN = "no_user_turn"

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldMapping:
    """Which input fields hold the text, id, source and chat messages."""

    text: str = "text"
    id: str = "id"
    source: str = "source"
    messages: str = "messages"


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateFieldMapping:
    """Which fields of a bank row hold the template, its compatible-document description,
    its id, the query it was made from (and that query's id) and its source. Only the
    first two are required."""

    template: str = "template"
    description: str = "compatible_document_description"
    id: str = "id"
    query: str = "query"
    query_id: str = "query_id"
    source: str = "source"


@dataclass(slots=True)
class ReadStats:
    """What a read saw: raw rows, records produced, and what was skipped and why.

    ``skipped`` counts by reason: ``empty_text``, ``no_user_turn`` (a chat with no
    user turn at all) and, with ``on_error="skip"``, ``invalid_row``, whose first
    errors are kept in ``errors``.
    """

    rows: int = 0
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors: list[InputError] = field(default_factory=list)

    def record_error(self, error: InputError) -> None:
        self.skipped["invalid_row"] += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(error)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "records": self.records, "skipped": dict(self.skipped)}


def input_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files to read: each path itself, or a folder's supported files, sorted.

    Hidden files (such as the temporary files of an unfinished write) are ignored. An
    fsspec URL (``s3://bucket/docs/``) is listed the same way and stays a string.
    """
    files: list[Path] = []
    for raw in paths:
        if is_url(raw):
            files.extend(_url_files(str(raw)))  # type: ignore[arg-type]
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and format_suffix(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise InputError(
                    path,
                    f"the folder holds no {', '.join(SUPPORTED_SUFFIXES)} files",
                    fix="give a folder of input files, or the files themselves",
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(path, "no such file or folder", fix="check the path")
    return files


def _url_files(url: str) -> list[str]:
    try:
        import fsspec
    except ImportError:  # pragma: no cover
        raise InputError(url, "reading URLs needs the Python package 'fsspec'", fix="pip install fsspec") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
        if fs.isdir(root):
            found = sorted(
                p for p in fs.find(root)
                if format_suffix(p) and not any(part.startswith(".") for part in p[len(root):].split("/"))
            )
            if not found:
                raise InputError(url, f"the folder holds no {', '.join(SUPPORTED_SUFFIXES)} files")
            return [fs.unstrip_protocol(p) for p in found]
        if fs.isfile(root):
            return [url]
    except InputError:
        raise
    except Exception as error:  # any backend's error: permissions, network, bad bucket
        raise InputError(url, f"cannot be listed ({error})", fix="check the URL and its credentials") from None
    raise InputError(url, "no such file or folder", fix="check the URL")


def source_name(path: Path | str) -> str:
    """The default source of a file's rows: its name without the format suffix."""
    name = file_name(path)
    suffix = format_suffix(path) or Path(name).suffix
    return name[: len(name) - len(suffix)] if suffix else name


def _string_field(
    path: Path, location: str, record: dict, name: str, *, fix: str
) -> str | InputError:
    if name not in record:
        fields = ", ".join(repr(k) for k in list(record)[:12]) or "none"
        return InputError(
            path, f"missing (the row's fields: {fields})", location=location, field=name, fix=fix
        )
    value = record[name]
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        return InputError(
            path, f"expected a string, got {kind}", location=location, field=name, fix=fix
        )
    return value


def _row_id(path: Path, location: str, record: dict, name: str) -> str | None | InputError:
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return InputError(
            path,
            f"an id must be a string or an integer, got {type(value).__name__}",
            location=location,
            field=name,
            fix="pass --id-field NAME for the field that holds ids, or remove the field",
        )
    return str(value)


def _source(record: dict, name: str, default: str) -> str:
    value = record.get(name)
    return value if isinstance(value, str) and value.strip() else default


def _read(
    paths: Iterable[str | Path],
    build: Callable[[Path, str, dict], Iterable[T | InputError | str]],
    stats: ReadStats,
    on_error: OnError,
) -> Iterator[T]:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    for path in input_files(paths):
        for results in file_outcomes(path, build):
            stats.rows += 1
            for result in results:
                if isinstance(result, InputError):
                    if on_error == "raise":
                        raise result
                    stats.record_error(result)
                elif isinstance(result, str):
                    stats.skipped[result] += 1
                else:
                    stats.records += 1
                    yield result


def file_outcomes(
    path: Path | str, build: Callable[[Path, str, dict], Iterable[T | InputError | str]]
) -> Iterator[list[T | InputError | str]]:
    """For each raw row of one file, what it gives: records, skip reasons (strings) and
    errors, in order. Distributed readers count and route these themselves."""
    for location, record in read_raw(path):
        yield [record] if isinstance(record, InputError) else list(build(path, location, record))


def read_documents(
    paths: Iterable[str | Path],
    *,
    fields: FieldMapping = FieldMapping(),
    stats: ReadStats | None = None,
    on_error: OnError = "raise",
) -> Iterator[DocumentRow]:
    """Documents from every file in ``paths``, in order."""
    return _read(paths, document_builder(fields), stats if stats is not None else ReadStats(), on_error)


def document_builder(fields: FieldMapping = FieldMapping()) -> Callable[[Path, str, dict], list]:
    """The function that turns one raw row into a document (or a skip reason, or an error)."""
    fix = f"pass --text-field NAME to say which field holds the document text (now {fields.text!r})"

    def build(path: Path, location: str, record: dict) -> list[DocumentRow | InputError | str]:
        text = _string_field(path, location, record, fields.text, fix=fix)
        if isinstance(text, InputError):
            return [text]
        if not text.strip():
            return [EMPTY_TEXT]
        row_id = _row_id(path, location, record, fields.id)
        if isinstance(row_id, InputError):
            return [row_id]
        return [
            DocumentRow(
                id=row_id or DocumentRow.make_id(text),
                text=text,
                source=_source(record, fields.source, source_name(path)),
            )
        ]

    return build


def read_queries(
    paths: Iterable[str | Path],
    *,
    fields: FieldMapping = FieldMapping(),
    stats: ReadStats | None = None,
    on_error: OnError = "raise",
) -> Iterator[QueryRow]:
    """Queries from every file in ``paths``: one per plain row, one per user turn of a chat."""
    return _read(paths, query_builder(fields), stats if stats is not None else ReadStats(), on_error)


def query_builder(fields: FieldMapping = FieldMapping()) -> Callable[[Path, str, dict], list]:
    """The function that turns one raw row into queries (or skip reasons, or errors)."""
    fix = (
        f"pass --text-field NAME for the field that holds the query (now {fields.text!r}), "
        f"or --messages-field NAME for chat rows (now {fields.messages!r})"
    )

    def build(path: Path, location: str, record: dict) -> list[QueryRow | InputError | str]:
        row_id = _row_id(path, location, record, fields.id)
        if isinstance(row_id, InputError):
            return [row_id]
        source = _source(record, fields.source, source_name(path))
        if fields.text not in record and fields.messages in record:
            return list(_chat_queries(path, location, record, fields, row_id, source))
        text = _string_field(path, location, record, fields.text, fix=fix)
        if isinstance(text, InputError):
            return [text]
        if not text.strip():
            return [EMPTY_TEXT]
        return [QueryRow(id=row_id or QueryRow.make_id(text), text=text, source=source)]

    return build


def _chat_queries(
    path: Path, location: str, record: dict, fields: FieldMapping, row_id: str | None, source: str
) -> Iterator[QueryRow | InputError | str]:
    messages = record[fields.messages]
    fix = "a chat row holds a list of {\"role\": ..., \"content\": ...} objects"
    if not isinstance(messages, list):
        yield InputError(
            path,
            f"expected a list of messages, got {type(messages).__name__}",
            location=location,
            field=fields.messages,
            fix=fix,
        )
        return
    user_turns = 0
    for turn, message in enumerate(messages):
        where = f"{fields.messages}[{turn}]"
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            yield InputError(
                path,
                "expected an object with 'role' and 'content'",
                location=location,
                field=where,
                fix=fix,
            )
            continue
        if str(message["role"]).lower() not in USER_ROLES:
            continue  # assistant and system turns are never queries
        user_turns += 1
        text = _message_text(message["content"])
        if text is None:
            yield InputError(
                path,
                f"expected a string or a list of text parts, got {type(message['content']).__name__}",
                location=location,
                field=f"{where}.content",
                fix=fix,
            )
        elif not text.strip():
            yield EMPTY_TEXT
        else:
            query_id = f"{row_id}#{turn}" if row_id else QueryRow.make_id(text)
            yield QueryRow(id=query_id, text=text, source=source)
    if not user_turns:
        yield NO_USER_TURN


def _message_text(content: Any) -> str | None:
    """The text of a message: a string, or the text parts of a multi-part content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)
        ]
        if len(parts) == len(content):
            return "\n".join(parts)
    return None


def read_rows(paths: Iterable[str | Path], row_type: type[T]) -> Iterator[T]:
    """Rows this package wrote (Parquet or JSONL shards), read back as ``row_type``."""
    import pyarrow.parquet as pq

    from fineinstructions.records import row_from_dict

    for path in input_files(paths):
        if format_suffix(path) == ".parquet":
            import pyarrow as pa

            try:
                rows = from_table(pq.read_table(path), row_type)
            except (pa.ArrowInvalid, OSError) as error:
                raise InputError(path, f"not a readable Parquet file ({error})") from None
            except (TypeError, ValueError) as error:
                raise InputError(path, f"not a {row_type.__name__} file ({error})") from None
            yield from rows
            continue
        for location, record in read_raw(path):
            if isinstance(record, InputError):
                raise record
            try:
                yield row_from_dict(row_type, record)
            except (TypeError, ValueError) as error:
                raise InputError(
                    path,
                    f"not a {row_type.__name__} row ({error})",
                    location=location,
                ) from None
