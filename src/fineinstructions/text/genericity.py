"""Is a template really a generic version of its query? (DESIGN §2.2)

A valid template parses, and it is also *generic*: the specifics of the query it was made
from have been replaced by variables. :func:`template_problems` applies every rule and
returns one :class:`Rejection` per broken rule, each with a machine-readable ``reason``:

- ``unclosed_tag``, ``stray_tag``, ``nested_tag``, ``empty_tag``, ``no_variables``: the
  template does not parse (see :mod:`fineinstructions.text.template`);
- ``copy_of_query``: nothing of the query was abstracted — every word of the query is
  still in the template's literal text (the text outside tags);
- ``leftover_number``, ``leftover_quote``, ``leftover_name``: a number, a quoted string or
  a capitalised name that the query had survives outside the tags;
- ``empty_description``: the compatible document description is blank;
- ``description_repeats_template``: the description is (nearly) the template's own words
  and says nothing about a document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fineinstructions.text.template import Template, try_parse_template

SYNTAX_REASONS = {
    "unclosed": "unclosed_tag",
    "stray": "stray_tag",
    "nested": "nested_tag",
    "empty": "empty_tag",
    "no_variables": "no_variables",
}

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,:/]\d+)*")
_QUOTED = (
    re.compile(r'"([^"\n]{2,200})"'),
    re.compile(r"“([^”\n]{2,200})”"),
    re.compile(r"(?<!\w)'([^'\n]{2,200})'(?!\w)"),
    re.compile(r"‘([^’\n]{2,200})’"),
)
# A capitalised word (or acronym) that does not start a sentence or a line.
_NAME = re.compile(r"(?<![.!?:\n]\s)(?<![.!?:\n])(?<!^)\b([A-Z][\w'’-]*[A-Za-z0-9])\b", re.M)
_NOT_NAMES = frozenset({"I", "I'm", "I’m", "I've", "I'd", "I'll", "OK", "Ok"})
# Nearly all of the description's words come from the template: a repeat, not a description.
REPEAT_OVERLAP = 0.8


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a template was rejected: a ``reason`` to count by and a human ``detail``."""

    reason: str
    detail: str


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def specifics(query: str) -> dict[str, set[str]]:
    """The query's numbers, quoted strings and capitalised names (each kind a set)."""
    quotes = {m.group(1).strip() for pattern in _QUOTED for m in pattern.finditer(query)}
    names = {m.group(1) for m in _NAME.finditer(query) if m.group(1) not in _NOT_NAMES}
    if _title_cased(query):  # "Showing A Menu When Users Are Logged In": capitals say nothing,
        names = {n for n in names if any(c.isupper() for c in n[1:])}  # but "NASA", "iPhone" do
    # A name such as "Mr" or a single letter says too little to call it a leftover.
    names = {name for name in names if len(name) > 1}
    return {
        "number": set(_NUMBER.findall(query)),
        "quote": {q for q in quotes if q},
        "name": names,
    }


def _title_cased(text: str) -> bool:
    words = [w for w in re.findall(r"[^\W\d_]+", text) if len(w) > 3]
    return len(words) >= 4 and sum(w[0].isupper() for w in words) >= 0.75 * len(words)


def _survives(value: str, literal: str, *, case_sensitive: bool) -> bool:
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", literal, flags) is not None


def template_problems(template: str, description: str, query: str) -> list[Rejection]:
    """Every rule ``template`` (made from ``query``, with ``description``) breaks.

    An empty list means the template is valid and generic. Syntax problems are reported
    alone: the other rules need a template that parses.
    """
    return checked_template(template, description, query)[1]


def checked_template(template: str, description: str, query: str) -> tuple[Template | None, list[Rejection]]:
    """The parsed template (None when it does not parse) and every rule it breaks, as
    :func:`template_problems` gives them, parsing it once."""
    parsed, syntax = try_parse_template(template)
    if parsed is None:
        return None, [Rejection(SYNTAX_REASONS[problem.kind], str(problem)) for problem in syntax]
    return parsed, _rule_problems(parsed, description, query)


def _rule_problems(parsed: Template, description: str, query: str) -> list[Rejection]:
    literal = parsed.literal_text()
    problems: list[Rejection] = []

    query_words = _words(query)
    if query_words and set(query_words) <= set(_words(literal)):
        problems.append(
            Rejection("copy_of_query", "every word of the query is still outside the tags")
        )
    found = specifics(query)
    for number in sorted(found["number"]):
        if _survives(number, literal, case_sensitive=True):
            problems.append(Rejection("leftover_number", f"the query's number {number!r} is still in the template"))
    for quote in sorted(found["quote"]):
        if quote.casefold() in literal.casefold():
            problems.append(Rejection("leftover_quote", f"the query's quoted {quote!r} is still in the template"))
    for name in sorted(found["name"]):
        if _survives(name, literal, case_sensitive=True):
            problems.append(Rejection("leftover_name", f"the query's name {name!r} is still in the template"))

    description_words = _words(description)
    if not description_words:
        problems.append(Rejection("empty_description", "the compatible document description is empty"))
    else:
        template_words = set(_words(parsed.text.replace("<fi>", " ").replace("</fi>", " ")))
        shared = sum(1 for word in description_words if word in template_words)
        if shared / len(description_words) >= REPEAT_OVERLAP:
            problems.append(
                Rejection(
                    "description_repeats_template",
                    f"{shared} of the description's {len(description_words)} words are the template's own",
                )
            )
    return problems
