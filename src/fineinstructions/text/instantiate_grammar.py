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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
) -> str | None:
    """The grammar for instantiating ``template`` on ``document``; ``None`` when the
    document offers no usable excerpt anchor (or has more than :data:`MAX_SENTENCES`
    sentences), and a looser constraint must do."""
    anchors = excerpt_anchors(document, words=anchor_words)[:MAX_SENTENCES]
    n = len(anchors)
    # t_i exists when some sentence at or after i has a suffix.
    has_tail = [False] * (n + 1)
    for i in range(n - 1, -1, -1):
        has_tail[i] = has_tail[i + 1] or anchors[i].suffix is not None
    starts = [i for i, anchor in enumerate(anchors) if anchor.prefix is not None and has_tail[i]]
    if not starts:
        return None
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
