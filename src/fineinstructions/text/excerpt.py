"""Expansion of ``<excerpt>`` markers into the document's own text.

An instantiated answer quotes its document compactly, to save decoding:

- ``<excerpt>PREFIX<...>SUFFIX</excerpt>`` stands for the one span of the document that
  starts with PREFIX and ends with SUFFIX. Its candidates are, for each occurrence of
  PREFIX, the span from that occurrence to the end of the first occurrence of SUFFIX that
  starts at or after the end of PREFIX.
- ``<excerpt>TEXT</excerpt>`` stands for an occurrence of TEXT itself.

No candidate makes the marker ``unresolved``; candidates with more than one distinct text
make it ``ambiguous`` (we never guess); candidates that all have the same text resolve to
the first. Matching treats any run of whitespace as equal to any other run and is exact
otherwise; whitespace at the outer edges of PREFIX, SUFFIX and TEXT is ignored. The
expanded text is always the document's own characters.

Matching runs on a copy of the document with whitespace runs collapsed to one space,
found with ``str.find`` and mapped back to original offsets by binary search, so each
marker costs time linear in the document's length.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

MARKER_OPEN = "<excerpt>"
MARKER_CLOSE = "</excerpt>"
ELLIPSIS = "<...>"

_MARKER_TAG = re.compile(r"</?excerpt>")
_WHITESPACE = re.compile(r"\s+")
# Whitespace that collapsing changes: runs of two or more, or one character that is not
# a plain space. A single space stays as it is, so clean text needs no offset mapping.
_IRREGULAR_WHITESPACE = re.compile(r"\s{2,}|[^\S ]")

Span = tuple[int, int]


class ExcerptError(str):
    """A marker that failed to expand.

    The string itself is the failure kind, ``"unresolved"`` or ``"ambiguous"``;
    ``index`` is the marker's position among the answer's markers (from 0),
    ``marker`` its raw text and ``detail`` a sentence saying why it failed.
    """

    index: int
    marker: str
    detail: str

    def __new__(cls, kind: str, index: int, marker: str, detail: str) -> "ExcerptError":
        error = super().__new__(cls, kind)
        error.index = index
        error.marker = marker
        error.detail = detail
        return error

    @property
    def kind(self) -> str:
        return str(self)

    @property
    def message(self) -> str:
        return f"marker {self.index} {self.kind}: {self.detail}"

    def __repr__(self) -> str:
        return f"ExcerptError({self.kind!r}, index={self.index}, detail={self.detail!r})"


@dataclass(frozen=True, slots=True)
class Expansion:
    """An answer with its excerpt markers replaced by document text.

    ``spans`` has one entry per marker, in order: the ``(start, end)`` character offsets
    of the quoted text in the document, or ``None`` for a marker that failed (its raw
    text then stays in ``text`` and counts as non-excerpt characters).
    """

    text: str
    spans: list[Span | None] = field(default_factory=list)
    excerpt_ratio: float = 0.0
    errors: list[ExcerptError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def normalize_whitespace(text: str) -> str:
    """Trim ``text`` and collapse each whitespace run to one space."""
    return _WHITESPACE.sub(" ", text).strip()


class SearchableDocument:
    """A document prepared for excerpt matching; build once, expand many answers.

    Holds the whitespace-collapsed text and what maps its offsets back to the
    original. The 6 answers of one document share one of these.
    """

    __slots__ = ("text", "collapsed", "_run_starts", "_shifts", "is_regular")

    def __init__(self, text: str) -> None:
        self.text = text
        run_starts: list[int] = []  # where each collapsed run's single space sits
        shifts: list[int] = []  # original minus collapsed offset, after each run
        pieces: list[str] = []
        cursor = removed = 0
        for run in _IRREGULAR_WHITESPACE.finditer(text):
            start, end = run.span()
            pieces.append(text[cursor:start])
            pieces.append(" ")
            run_starts.append(start - removed)
            removed += end - start - 1
            shifts.append(removed)
            cursor = end
        pieces.append(text[cursor:])
        self.collapsed = "".join(pieces) if run_starts else text
        self._run_starts = run_starts
        self._shifts = shifts
        self.is_regular = not run_starts

    def original_start(self, position: int) -> int:
        """Original offset of the character at collapsed ``position``."""
        k = bisect_right(self._run_starts, position) - 1
        if k < 0:
            return position
        if position == self._run_starts[k]:
            return position + (self._shifts[k - 1] if k else 0)
        return position + self._shifts[k]

    def original_end(self, position: int) -> int:
        """Original offset just after the character before collapsed ``position``."""
        if position == 0:
            return 0
        last = position - 1
        k = bisect_right(self._run_starts, last) - 1
        if k < 0:
            return position
        # When the last character is a collapsed run, the span ends after the whole run.
        return last + self._shifts[k] + 1

    def original_span(self, start: int, end: int) -> Span:
        return self.original_start(start), self.original_end(end)

    def occurrences(self, needle: str) -> Iterator[int]:
        """Collapsed offsets of every occurrence of ``needle``, overlapping ones included."""
        position = self.collapsed.find(needle)
        while position != -1:
            yield position
            position = self.collapsed.find(needle, position + 1)

    def has_other_spelling(self, needle: str, span: Span) -> bool:
        """Whether ``needle`` (collapsed) also occurs in the original text with whitespace
        other than that of ``span``. One regex pass: at each position, a flexible match
        that is not the exact text of ``span``."""
        flexible = r"\s+".join(map(re.escape, needle.split(" ")))
        exact = re.escape(self.text[span[0] : span[1]])
        return re.search(f"(?={flexible})(?!{exact})", self.text) is not None

    def next_occurrence(self, needle: str, start: int) -> int:
        """Collapsed offset of the first occurrence at or after ``start``, or -1."""
        return self.collapsed.find(needle, start)


def expand_excerpts(answer: str, document: str | SearchableDocument) -> Expansion:
    """Replace every ``<excerpt>…</excerpt>`` in ``answer`` by the document's own text.

    Never raises on a bad marker: failures are listed in ``Expansion.errors``.
    """
    doc = document if isinstance(document, SearchableDocument) else SearchableDocument(document)
    pieces: list[str] = []
    spans: list[Span | None] = []
    errors: list[ExcerptError] = []
    excerpt_chars = 0

    def fail(kind: str, marker: str, detail: str) -> None:
        errors.append(ExcerptError(kind, len(spans), marker, detail))
        spans.append(None)
        pieces.append(marker)

    cursor = 0  # start of answer text not yet copied
    open_at: int | None = None
    for tag in _MARKER_TAG.finditer(answer):
        if tag.group() == MARKER_OPEN:
            if open_at is not None:
                fail("unresolved", answer[open_at : tag.start()], "<excerpt> is never closed")
            else:
                pieces.append(answer[cursor : tag.start()])
            open_at = cursor = tag.start()
            continue
        if open_at is None:
            pieces.append(answer[cursor : tag.start()])
            fail("unresolved", tag.group(), "</excerpt> with no <excerpt> before it")
            cursor = tag.end()
            continue
        marker = answer[open_at : tag.end()]
        body = answer[open_at + len(MARKER_OPEN) : tag.start()]
        outcome = _resolve(doc, body)
        if isinstance(outcome, _Failure):
            fail(outcome.kind, marker, outcome.detail)
        else:
            start, end = outcome
            spans.append(outcome)
            pieces.append(doc.text[start:end])
            excerpt_chars += end - start
        open_at, cursor = None, tag.end()
    if open_at is not None:
        fail("unresolved", answer[open_at:], "<excerpt> is never closed")
    else:
        pieces.append(answer[cursor:])

    text = "".join(pieces)
    ratio = excerpt_chars / len(text) if text else 0.0
    return Expansion(text=text, spans=spans, excerpt_ratio=ratio, errors=errors)


class _Failure(NamedTuple):
    kind: str
    detail: str


def _resolve(doc: SearchableDocument, body: str) -> Span | _Failure:
    """The span a marker body stands for, or why it has none."""
    parts = body.split(ELLIPSIS)
    if len(parts) > 2:
        return _Failure("unresolved", f"more than one {ELLIPSIS} in one marker")
    if len(parts) == 1:
        text = normalize_whitespace(parts[0])
        if not text:
            return _Failure("unresolved", "the excerpt is empty")
        start = doc.collapsed.find(text)
        if start == -1:
            return _Failure("unresolved", f"{_quote(text)} does not occur in the document")
        span = doc.original_span(start, start + len(text))
        if not doc.is_regular and " " in text and doc.has_other_spelling(text, span):
            return _Failure("ambiguous", "it occurs with different whitespace in the document")
        return span

    prefix, suffix = (normalize_whitespace(p) for p in parts)
    if not prefix or not suffix:
        side = "prefix" if not prefix else "suffix"
        return _Failure("unresolved", f"the {side} around {ELLIPSIS} is empty")
    if doc.next_occurrence(prefix, 0) == -1:
        return _Failure(
            "unresolved", f"the prefix {_quote(prefix)} does not occur in the document"
        )

    def candidates() -> Iterator[Span]:
        # Prefix starts only grow, so the suffix found for one prefix is reused until a
        # prefix ends past it; each stretch of the document is searched at most once.
        suffix_at = -1
        for start in doc.occurrences(prefix):
            earliest = start + len(prefix)
            if suffix_at < earliest:
                suffix_at = doc.next_occurrence(suffix, earliest)
                if suffix_at == -1:
                    return
            yield start, suffix_at + len(suffix)

    outcome = _unique(doc, candidates())
    if outcome is None:
        return _Failure(
            "unresolved",
            f"no {_quote(suffix)} follows any occurrence of the prefix {_quote(prefix)}",
        )
    return outcome


def _unique(doc: SearchableDocument, candidates: Iterable[Span]) -> Span | _Failure | None:
    """The first candidate's original span if every candidate has the same original
    text, an ``ambiguous`` failure if not, ``None`` if there is no candidate."""
    first: Span | None = None
    first_text = ""
    for count, (start, end) in enumerate(candidates, start=1):
        span = doc.original_span(start, end)
        if first is None:
            first, first_text = span, doc.text[span[0] : span[1]]
            continue
        # Different lengths are different texts; compare characters only when needed.
        if span[1] - span[0] != len(first_text) or doc.text[span[0] : span[1]] != first_text:
            return _Failure("ambiguous", f"it matches {count} or more spans with different text")
    return first


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
