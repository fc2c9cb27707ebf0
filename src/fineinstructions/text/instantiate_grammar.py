"""A per-document GBNF grammar that grounds instantiated answers by construction.

The grammar lets the model write either ``null`` (the template does not fit the
document) or the JSON object ``{"instruction": "…", "answer": "…"}`` where

- the instruction is the template itself with each ``<fi>…</fi>`` tag replaced by a short
  free-text value (so no tag can survive and the wording stays the template's);
- the answer is one to ``max_excerpts`` excerpt markers
  ``<excerpt>PREFIX<...>SUFFIX</excerpt>`` with a few words of free text between them
  (and, when ``max_lead_chars`` is set, a short lead-in before them).

Every PREFIX is the opening words of a sentence of the document, made long enough to
occur exactly once in it, and every SUFFIX the closing words of the same or a later
sentence; so every marker the model can write resolves to exactly one span of the
document (:func:`fineinstructions.text.excerpt.expand_excerpts`). What the excerpts say, and
whether they answer the instruction, is still for the judge.

Sentences are numbered 1..n. For sentence ``i``, ``x_i ::= P_i "<...>" t_i`` and
``t_i ::= S_i | t_{i+1}``: a suffix of sentence ``i`` or of any later one. That is O(n)
rules for n sentences, compiled in milliseconds.

**Matched region.** The chunk whose Gaussian-pooled vector retrieved a template predicts
where in the document its answer lies (the FineInstructions paper measures a 0.99
correlation). Given a ``region`` (character offsets, from :func:`chunk_region`), excerpts
may only *start* at sentences that begin inside it (they may still run past its end);
when the region holds no usable anchor, the whole document is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain

from fineinstructions.text.excerpt import ELLIPSIS, MARKER_CLOSE, MARKER_OPEN, normalize_whitespace
from fineinstructions.text.template import parse_template
from fineinstructions.text.templatize_grammar import gbnf_json_literal as _literal

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\s*\n\s*")
# Free text in a JSON string: no markup ("<"), no quote, backslash or control characters.
_FREE = r'[^<"\\\x00-\x1f]'
_VALUE = r'[^<"\\\x00-\x1f,.?!;]'
MAX_SENTENCES = 600


@dataclass(frozen=True, slots=True)
class Anchor:
    """A sentence's excerpt anchors: ``prefix`` (unique in the document; ``None`` when
    no opening run of its words is) and ``suffix`` (``None`` for a one-word sentence)."""

    prefix: str | None
    suffix: str | None


def sentences(text: str) -> list[str]:
    """The document's sentences (and lines), whitespace collapsed, empty ones dropped."""
    return [s for s in (normalize_whitespace(part) for part in _SENTENCE_END.split(text)) if s]


def sentence_offsets(text: str) -> list[int]:
    """The character offset in ``text`` where each sentence of :func:`sentences` starts."""
    offsets, position = [], 0
    for separator in chain(_SENTENCE_END.finditer(text), [None]):
        end = separator.start() if separator else len(text)
        part = text[position:end]
        if part.strip():
            offsets.append(position + len(part) - len(part.lstrip()))
        position = separator.end() if separator else len(text)
    return offsets


def chunk_region(chunk: int, num_chunks: int, length: int, window: float) -> tuple[int, int] | None:
    """The characters of a ``length``-character document around the centre of local
    chunk ``chunk`` (1..``num_chunks``; centres at ``chunk / (num_chunks + 1)`` of the
    document, as in :func:`~fineinstructions.models.pooling.gaussian_pool`), ``window``
    of the document either side; ``None`` for the global vector (chunk 0), an unknown
    chunk, or no window."""
    if not window or chunk < 1 or chunk > num_chunks or length <= 0:
        return None
    centre = chunk / (num_chunks + 1)
    return max(0, int((centre - window) * length)), min(length, int((centre + window) * length) + 1)


def excerpt_anchors(text: str, *, words: int = 4, max_prefix_words: int = 12) -> list[Anchor]:
    """One :class:`Anchor` per sentence of ``text``.

    A prefix starts with ``min(words, half the sentence)`` words and grows one word at a
    time (up to ``max_prefix_words``, and never into the suffix) until it occurs once in
    the whitespace-collapsed document. The suffix is the last ``min(words, rest)`` words.
    """
    collapsed = normalize_whitespace(text)
    out = []
    for sentence in sentences(text):
        tokens = sentence.split(" ")
        n = len(tokens)
        take = max(1, min(words, n // 2 or 1))
        prefix = None
        while take <= min(max_prefix_words, max(1, n - 1)):
            candidate = " ".join(tokens[:take])
            first = collapsed.find(candidate)
            if first != -1 and collapsed.find(candidate, first + 1) == -1:
                prefix = candidate
                break
            take += 1
        rest = n - (take if prefix else min(words, n // 2 or 1))
        suffix = " ".join(tokens[n - min(words, rest) :]) if rest >= 1 else None
        out.append(Anchor(prefix, suffix))
    return out


def instruction_rule(template: str, *, max_value_chars: int = 40) -> str:
    """GBNF for the template with each variable replaced by 1–``max_value_chars``
    characters that end no clause (no ``,``, ``.``, ``?``, ``!`` or ``;``)."""
    parsed = parse_template(template)
    parts, cursor = [], 0
    for variable in parsed.occurrences:
        literal = template[cursor : variable.start]
        if literal:
            parts.append(_literal(literal))
        parts.append("value")
        cursor = variable.end
    if template[cursor:]:
        parts.append(_literal(template[cursor:]))
    return " ".join(parts) + f"\nvalue ::= {_VALUE}{{1,{max_value_chars}}}"


def document_grammar(
    document: str,
    template: str,
    *,
    max_excerpts: int = 3,
    max_lead_chars: int = 0,
    max_gap_chars: int = 24,
    anchor_words: int = 4,
    region: tuple[int, int] | None = None,
    min_region_sentences: int = 3,
) -> str | None:
    """The grammar for instantiating ``template`` on ``document``; ``None`` when the
    document offers no usable excerpt anchor (or has more than :data:`MAX_SENTENCES`
    sentences), and a looser constraint must do.

    With ``region`` (``[start, end)`` character offsets), excerpts start only at
    sentences that begin inside it, widened to the ``min_region_sentences`` usable
    sentences nearest its centre when it holds fewer."""
    anchors = excerpt_anchors(document, words=anchor_words)[:MAX_SENTENCES]
    n = len(anchors)
    # t_i exists when some sentence at or after i has a suffix.
    has_tail = [False] * (n + 1)
    for i in range(n - 1, -1, -1):
        has_tail[i] = has_tail[i + 1] or anchors[i].suffix is not None
    starts = [i for i, anchor in enumerate(anchors) if anchor.prefix is not None and has_tail[i]]
    if not starts:
        return None
    if region is not None:
        starts = region_starts(starts, sentence_offsets(document), region, min_region_sentences)
    lines = [
        'root ::= "null" | "{\\"instruction\\": \\"" instruction "\\", \\"answer\\": \\"" answer "\\"}"',
        "instruction ::= " + instruction_rule(template),
        "answer ::= "
        + ("lead? " if max_lead_chars else "")
        + "excerpt"
        + (f" (gap excerpt){{0,{max_excerpts - 1}}}" if max_excerpts > 1 else ""),
        f'gap ::= " " | " " {_FREE}{{1,{max_gap_chars}}} " "',
        f"excerpt ::= {_literal(MARKER_OPEN)} ({' | '.join(f'x{i}' for i in starts)}) {_literal(MARKER_CLOSE)}",
    ]
    if max_lead_chars:
        lines.append(f"lead ::= {_FREE}{{1,{max_lead_chars}}}")
    for i in starts:
        lines.append(f"x{i} ::= {_literal(anchors[i].prefix)} {_literal(ELLIPSIS)} t{i}")
    for i in range(n):
        if not has_tail[i]:
            break
        choices = []
        if anchors[i].suffix is not None:
            choices.append(_literal(anchors[i].suffix))
        if has_tail[i + 1]:
            choices.append(f"t{i + 1}")
        lines.append(f"t{i} ::= " + " | ".join(choices))
    return "\n".join(lines) + "\n"


def region_starts(
    starts: list[int], offsets: list[int], region: tuple[int, int], minimum: int = 3
) -> list[int]:
    """The sentences of ``starts`` that begin inside ``region``, or, when fewer than
    ``minimum`` do, the ``minimum`` nearest its centre (in document order)."""
    low, high = region
    inside = [i for i in starts if low <= offsets[i] < high]
    if len(inside) >= minimum:
        return inside
    centre = (low + high) / 2
    nearest = sorted(starts, key=lambda i: (abs(offsets[i] - centre), i))[:minimum]
    return sorted(nearest)


def region_opening(document: str, region: tuple[int, int], words: int = 8) -> str:
    """The first words of the first sentence that starts in ``region``."""
    offsets = sentence_offsets(document)
    start = next((o for o in offsets if region[0] <= o < region[1]), region[0])
    return " ".join(document[start:].split()[:words])


_CUT_AT = re.compile(r"[.!?]\s|\n")


def cut_at_boundary(text: str, keep: int) -> str:
    """``text[:keep]``, moved back to the last sentence end (or else word end) in its
    last fifth, so a cut document does not end mid-word."""
    if keep >= len(text):
        return text
    head = text[: max(keep, 0)]
    floor = int(len(head) * 0.8)
    ends = [m.end() for m in _CUT_AT.finditer(head, floor)]
    if ends:
        return head[: ends[-1]].rstrip()
    space = head.rfind(" ", floor)
    return head[:space].rstrip() if space > 0 else head
