"""Input shards: what one worker reads for one output shard, planned by the driver.

An :class:`InputShard` is a small, picklable description: a piece of an input file
(documents or queries), files this package wrote (``rows``), or both (``joined``: a piece
of the corpus with the rows an earlier stage made from it, grouped by document). The
worker reads it itself; the driver never reads the rows.

Shards are aligned along the document side: match shard *i* is made from document piece
*i*, and the pairs, judged pairs and dataset shards *i* from match shard *i*, so each
later stage finds the documents it needs (to instantiate, to count a budget) in the one
piece its upstream marker names, with no global join.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from fineinstructions.errors import InputError
from fineinstructions.io.formats import is_url
from fineinstructions.io.pieces import Piece, plan_pieces, read_piece
from fineinstructions.io.readers import (
    FieldMapping,
    TemplateFieldMapping,
    document_builder,
    input_files,
    query_builder,
    read_rows,
)
from fineinstructions.records import ROW_TYPES, RejectRow
from fineinstructions.text.bank import DUPLICATE, DUPLICATE_ID, REPEATED, template_builder

ROW_TYPE_NAMES = {t.__name__: t for t in ROW_TYPES}


@dataclass(frozen=True)
class ReadSpec:
    """How a worker reads corpus files: field names, and what a bad row does."""

    fields: FieldMapping = FieldMapping()
    on_error: Literal["raise", "skip"] = "raise"
    templates: TemplateFieldMapping = TemplateFieldMapping()  # for reads="templates"


@dataclass(frozen=True)
class InputShard:
    """What output shard ``index`` is made from (see the module doc)."""

    index: int
    reads: Literal["documents", "queries", "templates", "rows", "joined"]
    piece: Piece | None = None
    files: tuple[str, ...] = ()
    row_type: str | None = None
    rows: int | None = None  # inputs it holds, when known (for progress)
    skip_hashes: tuple[int, ...] = ()  # documents an earlier shard already had (duplicate ids)
    bank: tuple[str, ...] = ()  # template files completing match rows written without their template

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reads": self.reads}
        if self.piece is not None:
            out["piece"] = self.piece.describe()
        if self.files:
            out["files"] = list(self.files)
        if self.skip_hashes:
            out["skip_hashes"] = [str(h) for h in self.skip_hashes]
        return out


def id_hash(document_id: str) -> int:
    """A 64-bit hash of an id, for the duplicate-id reduce (8 bytes a document)."""
    return int.from_bytes(hashlib.blake2b(document_id.encode("utf-8"), digest_size=8).digest(), "little")


def plan_corpus(paths, reads: Literal["documents", "queries", "templates"], rows: int, limit: int | None = None) -> list[InputShard]:
    """Shards of about ``rows`` rows over every file of ``paths``, in file order (with
    ``limit``, JSONL files end after the first ``limit`` lines in all)."""
    shards: list[InputShard] = []
    left = limit
    for path in input_files(paths):
        if left is not None and left <= 0:
            break
        for piece in plan_pieces(path, rows, left):
            shards.append(InputShard(len(shards), reads, piece=piece, rows=piece.rows))
            if left is not None and piece.rows is not None:
                left -= piece.rows
    return shards


def from_upstream(folder: str | Path, markers: dict[int, dict], reads: str, row_type: type) -> list[InputShard]:
    """Shard *i* reads what upstream shard *i* wrote (and its document piece): stages
    after match follow the document pieces match was cut into."""
    shards = []
    for index, marker in sorted(markers.items()):
        inputs = marker["inputs"]
        piece = Piece(**inputs["piece"]) if "piece" in inputs else None
        files = (str(Path(folder) / marker["file"]),) if marker.get("file") else ()
        skip = tuple(int(h) for h in [*inputs.get("skip_hashes", ()), *marker.get("duplicate_hashes", ())])
        rows = (piece.rows if piece is not None else None) if reads == "joined" else marker.get("rows")
        shards.append(InputShard(index, reads, piece=piece, files=files, row_type=row_type.__name__, rows=rows, skip_hashes=skip))
    return shards


def plan_files(files, row_type: type) -> list[InputShard]:
    """One shard per file of rows this package wrote."""
    return [InputShard(i, "rows", files=(str(f),), row_type=row_type.__name__) for i, f in enumerate(files)]


@dataclass
class ReadResult:
    """What reading a shard saw: counts (``read:rows``, ``read:records``,
    ``read:skipped:<reason>``) and a reject for each bad row skipped."""

    counts: Counter = field(default_factory=Counter)
    rejects: list[RejectRow] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # the documents read, in order


def _builder(kind: str, spec: ReadSpec):
    if kind == "documents":
        return document_builder(spec.fields)
    if kind == "templates":
        return template_builder(spec.templates)
    return query_builder(spec.fields)


def _corpus_rows(piece: Piece, kind: str, spec: ReadSpec, result: ReadResult, skip: frozenset[int]) -> Iterator[Any]:
    build = _builder(kind, spec)
    seen: set[str] = set()
    contents: set[str] = set()
    path = piece.path if is_url(piece.path) else Path(piece.path)
    for location, record in read_piece(piece):
        result.counts["read:rows"] += 1
        outcomes = [record] if isinstance(record, InputError) else build(path, location, record)  # type: ignore[arg-type]
        for outcome in outcomes:
            if isinstance(outcome, InputError):
                if spec.on_error == "raise":
                    raise outcome
                result.counts["read:skipped:invalid_row"] += 1
                result.rejects.append(
                    RejectRow(stage="read", input_id=f"{piece.path}:{location}", reason="invalid_row",
                              detail=str(outcome), input="")
                )
            elif isinstance(outcome, str):
                result.counts[f"read:skipped:{outcome}"] += 1
            elif isinstance(outcome, RejectRow):  # a template the pipeline's rules refuse
                result.counts[f"read:skipped:{outcome.reason}"] += 1
                result.rejects.append(outcome)
            elif kind == "documents" and (outcome.id in seen or (skip and id_hash(outcome.id) in skip)):
                # Identical texts share a content-hash id: the first occurrence wins.
                result.counts["read:skipped:duplicate_id"] += 1
            elif kind == "templates" and (duplicate := _repeated_template(outcome, seen, contents)):
                # Repeats within the shard; the index build drops those across shards.
                result.counts[f"read:skipped:{duplicate}"] += 1
                result.rejects.append(RejectRow(stage="index", input_id=outcome.id, reason=duplicate,
                                                detail=f"{piece.path}:{location}: {REPEATED[duplicate]}", input=outcome.template))
            else:
                if kind == "documents":
                    seen.add(outcome.id)
                    result.ids.append(outcome.id)
                result.counts["read:records"] += 1
                yield outcome


def _repeated_template(row: Any, ids: set[str], contents: set[str]) -> str | None:
    """``duplicate`` (an earlier row had this template and description),
    ``duplicate_id`` (another template had this id) or None, remembering the row."""
    content = row.content_key()
    if content in contents:
        return DUPLICATE
    if row.id in ids:
        return DUPLICATE_ID
    contents.add(content)
    ids.add(row.id)
    return None


def read_shard(shard: InputShard, spec: ReadSpec) -> tuple[Iterator[Any], ReadResult]:
    """The shard's inputs, streamed, and what reading them saw (filled as they stream)."""
    result = ReadResult()
    skip = frozenset(shard.skip_hashes)
    if shard.reads in ("documents", "queries", "templates"):
        assert shard.piece is not None
        return _corpus_rows(shard.piece, shard.reads, spec, result, skip), result
    row_type = ROW_TYPE_NAMES[shard.row_type or ""]
    if shard.reads == "rows":
        return (read_rows(list(shard.files), row_type) if shard.files else iter(())), result
    assert shard.piece is not None
    return _joined(shard, row_type, spec, result, skip), result


def _joined(shard: InputShard, row_type: type, spec: ReadSpec, result: ReadResult, skip) -> Iterator[tuple[Any, list]]:
    """Each document of the piece with the rows of ``files`` made from it (rows of
    documents outside the piece are ignored, so a folder not cut along the same pieces
    still joins correctly, only slower)."""
    documents = list(_corpus_rows(shard.piece, "documents", spec, result, skip))  # type: ignore[arg-type]
    wanted = {d.id for d in documents}
    by_document: dict[str, list] = defaultdict(list)
    files = [f for f in shard.files if Path(f).exists()]
    if files:
        for row in read_rows(files, row_type):
            if row.document_id in wanted:
                by_document[row.document_id].append(row)
                result.counts["read:joined"] += 1
    if shard.bank:
        _complete_templates(by_document, shard.bank)
    for document in documents:
        yield document, by_document.pop(document.id, [])


def _complete_templates(by_document: dict[str, list], bank: tuple[str, ...]) -> None:
    """Match rows written without their template's text (by an older version, or by
    hand) get it from the bank: only the templates this shard names are kept."""
    import dataclasses

    from fineinstructions.errors import UserError
    from fineinstructions.records import TemplateRow

    missing = {row.template_id for rows in by_document.values() for row in rows if not row.template}
    if not missing:
        return
    found = {t.id: t for t in read_rows(list(bank), TemplateRow) if t.id in missing}
    if missing - set(found):
        raise UserError(
            f"{len(missing - set(found))} matched template(s) carry no template text and are not in "
            f"{', '.join(bank)}, e.g. {sorted(missing - set(found))[0]}.\n"
            "  fix: pass with --templates the bank the index was built from, or match again"
        )
    for rows in by_document.values():
        rows[:] = [
            dataclasses.replace(r, template=found[r.template_id].template, variables=found[r.template_id].variables,
                                query_id=found[r.template_id].query_id) if not r.template else r
            for r in rows
        ]


def hashes_of(ids) -> np.ndarray:
    return np.fromiter((id_hash(i) for i in ids), dtype=np.uint64)
