"""The row types every stage reads and writes, and their Arrow schemas.

Rows are frozen, slotted dataclasses. Each type declares its Arrow schema once
(``SCHEMA``), and :func:`to_table` / :func:`from_table` convert batches both ways.
Ids are stable: an input's own id when it has one, otherwise a content hash
(:func:`content_id`), so re-reading the same data always yields the same ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

import pyarrow as pa

_SEPARATOR = "\x1f"  # unit separator: cannot occur by accident in ids or between parts


def content_id(prefix: str, *parts: str) -> str:
    """A stable id from content: ``prefix`` + 16 hex digits of a BLAKE2b hash of ``parts``."""
    digest = hashlib.blake2b(_SEPARATOR.join(parts).encode("utf-8"), digest_size=8)
    return f"{prefix}-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryRow:
    """A real user query (one user turn of a chat counts as one query)."""

    id: str
    text: str
    source: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("source", pa.string())]
    )

    @staticmethod
    def make_id(text: str) -> str:
        return content_id("q", text)


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentRow:
    """A pre-training document. ``token_count`` is filled in when it has been counted."""

    id: str
    text: str
    source: str
    token_count: int | None = None

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("source", pa.string()),
            ("token_count", pa.int64()),
        ]
    )

    @staticmethod
    def make_id(text: str) -> str:
        return content_id("d", text)


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateRow:
    """An instruction template made from a query, with the description of documents
    that could fill its variables and answer it."""

    id: str
    query_id: str
    source: str
    template: str
    compatible_document_description: str
    variables: tuple[str, ...]
    complexity: int
    model: str
    prompt_version: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("id", pa.string()),
            ("query_id", pa.string()),
            ("source", pa.string()),
            ("template", pa.string()),
            ("compatible_document_description", pa.string()),
            ("variables", pa.list_(pa.string())),
            ("complexity", pa.int32()),
            ("model", pa.string()),
            ("prompt_version", pa.string()),
        ]
    )

    @staticmethod
    def make_id(template: str, compatible_document_description: str) -> str:
        return content_id("t", template, compatible_document_description)

    def content_key(self) -> str:
        """What two rows share when they hold the same template (whatever their ids)."""
        return TemplateRow.make_id(self.template, self.compatible_document_description)


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchRow:
    """A template retrieved for a document by one of its vectors
    (``chunk`` 0 is the global vector, 1..K the Gaussian-pooled local ones).

    It carries what instantiating it needs of the template (its text, variables and
    query), so no worker has to load the whole bank. Matches written before these
    fields existed read back with them empty."""

    document_id: str
    template_id: str
    chunk: int
    score: float
    query_id: str = ""
    template: str = ""
    variables: tuple[str, ...] = ()

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("document_id", pa.string()),
            ("template_id", pa.string()),
            ("chunk", pa.int32()),
            ("score", pa.float32()),
            ("query_id", pa.string()),
            ("template", pa.string()),
            ("variables", pa.list_(pa.string())),
        ]
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PairRow:
    """An instruction and its answer, grounded in one document.

    ``answer`` is the expanded text (excerpts replaced by document text) and
    ``excerpt_spans`` the document character offsets of each excerpt. ``text`` is the
    formatted training string and ``token_count`` its length in tokens; both are set
    once the pair is formatted. Model and prompt-version fields record what made it.
    ``document_chars`` is set when the document was too long for the model's context
    and was cut: the model saw (and the excerpts quote) only its first that many
    characters.

    ``relevance`` and ``passage_relevance`` are the embedder's cosine similarity of the
    instruction to the answer and to the passage around its excerpts (set by
    instantiate when it scores relevance). ``judge_score`` is the score the judge wrote
    (its most likely one); ``judge_expected_score`` the mean of 1–5 under the judge's own
    probabilities of the score tokens, where its backend reports them.
    """

    id: str
    document_id: str
    template_id: str
    query_id: str
    instruction: str
    answer: str
    excerpt_ratio: float
    excerpt_spans: tuple[tuple[int, int], ...] = ()
    judge_score: int | None = None
    text: str | None = None
    token_count: int | None = None
    instantiate_model: str | None = None
    instantiate_prompt_version: str | None = None
    judge_model: str | None = None
    judge_prompt_version: str | None = None
    document_chars: int | None = None
    relevance: float | None = None
    passage_relevance: float | None = None
    judge_expected_score: float | None = None

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("id", pa.string()),
            ("document_id", pa.string()),
            ("template_id", pa.string()),
            ("query_id", pa.string()),
            ("instruction", pa.string()),
            ("answer", pa.string()),
            ("excerpt_ratio", pa.float32()),
            ("excerpt_spans", pa.list_(pa.list_(pa.int64(), 2))),
            ("judge_score", pa.int8()),
            ("text", pa.string()),
            ("token_count", pa.int64()),
            ("instantiate_model", pa.string()),
            ("instantiate_prompt_version", pa.string()),
            ("judge_model", pa.string()),
            ("judge_prompt_version", pa.string()),
            ("document_chars", pa.int64()),
            ("relevance", pa.float32()),
            ("passage_relevance", pa.float32()),
            ("judge_expected_score", pa.float32()),
        ]
    )

    @staticmethod
    def make_id(document_id: str, template_id: str) -> str:
        return content_id("p", document_id, template_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectRow:
    """An input a stage could not turn into output, kept so a user can see why.

    ``reason`` is the machine-readable reason it was counted under, ``detail`` the
    human-readable explanation, ``input`` what the stage was given (a query's text, a
    pair's instruction) and ``raw_output`` what the model answered, verbatim.
    """

    stage: str
    input_id: str
    reason: str
    detail: str
    input: str
    raw_output: str | None = None
    model: str | None = None
    prompt_version: str | None = None

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("stage", pa.string()),
            ("input_id", pa.string()),
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("input", pa.string()),
            ("raw_output", pa.string()),
            ("model", pa.string()),
            ("prompt_version", pa.string()),
        ]
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedTemplateRow:
    """A template's description vector (a float32 array as the embed stage makes it), as
    the index build's workers write it, with what match rows carry of the template and
    its ``content`` key (equal for equal template and description, whatever the id)."""

    id: str
    content: str
    query_id: str
    template: str
    variables: tuple[str, ...]
    complexity: int
    vector: Any

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("id", pa.string()),
            ("content", pa.string()),
            ("query_id", pa.string()),
            ("template", pa.string()),
            ("variables", pa.list_(pa.string())),
            ("complexity", pa.int32()),
            ("vector", pa.list_(pa.float32())),
        ]
    )


Row = TypeVar("Row", QueryRow, DocumentRow, TemplateRow, MatchRow, PairRow, RejectRow)
ROW_TYPES: tuple[type, ...] = (QueryRow, DocumentRow, TemplateRow, MatchRow, PairRow, RejectRow, EmbeddedTemplateRow)


def row_to_dict(row: Any) -> dict[str, Any]:
    """A row as a plain dict of JSON/Arrow-compatible values (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(row):
        value = getattr(row, f.name)
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[f.name] = value
    return out


def row_from_dict(row_type: type[Row], data: Mapping[str, Any]) -> Row:
    """Build a row from a dict such as one Arrow or JSON gave back; unknown keys are errors."""
    names = {f.name for f in dataclasses.fields(row_type)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{row_type.__name__} has no field(s) {sorted(unknown)}")
    values = dict(data)
    for key, value in values.items():
        if isinstance(value, list):  # lists back to the tuples the frozen rows hold
            values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return row_type(**values)


def to_table(rows: Sequence[Any], row_type: type | None = None) -> pa.Table:
    """A batch of rows as an Arrow table with the row type's schema."""
    if row_type is None:
        if not rows:
            raise ValueError("to_table needs row_type when rows is empty")
        row_type = type(rows[0])
    schema: pa.Schema = row_type.SCHEMA
    columns = {name: [] for name in schema.names}
    for row in rows:
        for name, value in row_to_dict(row).items():
            columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=schema)


def from_table(table: pa.Table, row_type: type[Row]) -> list[Row]:
    """The rows of an Arrow table (columns the row type lacks are an error)."""
    return [row_from_dict(row_type, record) for record in table.to_pylist()]
