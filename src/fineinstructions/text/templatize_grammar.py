"""A per-query GBNF grammar that makes a template *of this query* (llama.cpp backends).

The grammar lets the model write the JSON answer
``{"template": "…", "compatible_document_description": "…"}`` where the template is the
query itself, word for word, except that runs of 1–``max_span`` consecutive words (or
punctuation marks) are replaced by ``<fi>description</fi>`` tags, at least one of them.
So even a tiny model cannot drift away from the query, repeat itself until it runs out of
tokens, or answer without a variable; whether it replaced the *right* words is still
checked afterwards (:mod:`fineinstructions.text.genericity`).

The query is cut into segments (words, and runs of punctuation), each remembering
whether whitespace preceded it. Rules, for segment positions ``i`` = 1..n:

- ``a_i``: no tag yet; emit segment i and go to ``a_{i+1}``, or a tag covering segments
  i..j-1 and go to ``b_j`` (``j - i`` ≤ ``max_span``);
- ``b_i``: a tag was written; the same choices, but reaching the end is allowed.

That is O(n · max_span) alternatives, compiled in milliseconds for queries of hundreds of
words.
"""

from __future__ import annotations

import json
import re

_SEGMENT = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
_WORDISH = re.compile(r"\w")
# A tag's description: 1–80 JSON-safe characters, no "<" or ">".
_TAG_BODY = r'[^<>"\\\x00-\x1f]'
MAX_SEGMENTS = 400


def segments(query: str) -> list[tuple[str, str]]:
    """``(prefix, text)`` pairs: each word or punctuation run with the space before it."""
    out = []
    for match in _SEGMENT.finditer(query):
        before = query[: match.start()]
        prefix = " " if out and before[-1:].isspace() else ""
        out.append((prefix, match.group()))
    return out


def gbnf_json_literal(text: str) -> str:
    """A GBNF string literal matching ``text`` as it appears inside a JSON string."""
    inside_json = json.dumps(text, ensure_ascii=False)[1:-1]
    return json.dumps(inside_json, ensure_ascii=False)


def query_template_grammar(query: str, *, max_span: int = 6, max_tag_chars: int = 80) -> str | None:
    """The GBNF grammar for templates of ``query``; ``None`` when the query has no word
    or more than :data:`MAX_SEGMENTS` segments (then a looser constraint must do)."""
    parts = segments(query)
    n = len(parts)
    if n == 0 or n > MAX_SEGMENTS:
        return None
    # words_after[i]: some segment after position i (1-based) is a word.
    words_after = [False] * (n + 1)
    for i in range(n - 1, -1, -1):
        words_after[i] = words_after[i + 1] or bool(_WORDISH.match(parts[i][1]))
    if not any(_WORDISH.match(text) for _, text in parts):
        return None
    lines = [
        'root ::= "{\\"template\\": \\"" a1 "\\", \\"compatible_document_description\\": \\"" '
        'desc "\\"}"',
        f'tag ::= "<fi>" {_TAG_BODY}{{1,{max_tag_chars}}} "</fi>"',
        # One or two sentences, each ending in a period: a looping model must stop.
        'desc ::= sentence (" " sentence)?',
        'sentence ::= [^."\\\\\\x00-\\x1f]{8,240} "."',
    ]
    for layer in ("a", "b"):
        for i in range(1, n + 1):
            prefix, text = parts[i - 1]
            space = '" " ' if prefix else ""
            if layer == "a":  # copying this segment must leave a word to make a variable of
                word_next = f"a{i + 1}" if words_after[i] else None
            else:
                word_next = f"b{i + 1}" if i < n else ""
            choices = []
            if word_next is not None:
                choices.append(f"{space}{gbnf_json_literal(text)} {word_next}".rstrip())
            if _WORDISH.match(text):  # a variable replaces words, never bare punctuation
                for j in range(i + 1, min(i + max_span, n) + 1):
                    choices.append(f"{space}tag b{j}")
                if i + max_span > n:  # the tag may run to the end of the query
                    choices.append(f"{space}tag")
            if choices:  # (an "a" rule with none is never reached)
                lines.append(f"{layer}{i} ::= " + " | ".join(choices))
    return "\n".join(lines) + "\n"
