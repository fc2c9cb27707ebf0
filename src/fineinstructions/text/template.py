"""The `<fi>…</fi>` template syntax.

A template is an instruction in which every specific entity or scenario of the original
query has been replaced by a variable: ``<fi>a description of what goes here</fi>``.
The same description written twice is the same variable, so ``complexity`` (the number of
distinct variables) can be smaller than the number of tags.

Descriptions are compared after trimming and collapsing runs of whitespace, so
``<fi> type of  document</fi>`` and ``<fi>type of document</fi>`` are one variable.
Tags are exact and lower-case: ``<fi>`` opens, ``</fi>`` closes, and tags never nest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from fineinstructions.errors import TemplateSyntaxError

OPEN_TAG = "<fi>"
CLOSE_TAG = "</fi>"

_TAG = re.compile(r"<fi>|</fi>")
_WHITESPACE = re.compile(r"\s+")


class TemplateProblem(str):
    """One reason a template is invalid.

    It is the human-readable message (a ``str``), with the machine-readable ``kind``
    (``unclosed``, ``stray``, ``nested``, ``empty``, ``no_variables``) and the character
    ``offset`` in the template text where the problem is (``None`` for whole-text problems).
    """

    kind: str
    offset: int | None

    def __new__(cls, kind: str, message: str, offset: int | None = None) -> "TemplateProblem":
        problem = super().__new__(cls, message)
        problem.kind = kind
        problem.offset = offset
        return problem


@dataclass(frozen=True, slots=True)
class Variable:
    """One occurrence of a ``<fi>`` tag: its normalised description and where it sits."""

    description: str
    start: int  # offset of "<fi>" in the template text
    end: int  # offset just after "</fi>"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed, valid template."""

    text: str
    occurrences: tuple[Variable, ...]

    @property
    def variables(self) -> list[str]:
        """Distinct variable descriptions, in order of first appearance."""
        return list(dict.fromkeys(v.description for v in self.occurrences))

    @property
    def complexity(self) -> int:
        """Number of distinct variables."""
        return len(self.variables)

    def _substitute(self, value_of) -> list[str]:
        """The text cut at every tag, each tag replaced by ``value_of(variable)``."""
        parts, cursor = [], 0
        for variable in self.occurrences:
            parts.append(self.text[cursor : variable.start])
            parts.append(value_of(variable))
            cursor = variable.end
        parts.append(self.text[cursor:])
        return parts

    def literal_text(self) -> str:
        """The template with every tag removed: the words the template fixes."""
        parts = self._substitute(lambda variable: "")
        return " ".join(part.strip() for part in parts if part.strip())

    def fill(self, values: Mapping[str, str]) -> str:
        """Replace each variable by ``values[description]``; every variable needs a value."""
        missing = [d for d in self.variables if d not in values]
        if missing:
            raise KeyError(f"no value for template variable(s): {missing}")
        return "".join(self._substitute(lambda variable: values[variable.description]))


def normalize_description(description: str) -> str:
    """The identity of a variable: its description trimmed, whitespace runs collapsed."""
    return _WHITESPACE.sub(" ", description).strip()


def _scan(text: str) -> tuple[list[Variable], list[TemplateProblem]]:
    variables: list[Variable] = []
    problems: list[TemplateProblem] = []
    open_tags: list[int] = []  # offsets of <fi> tags not closed yet, innermost last
    for tag in _TAG.finditer(text):
        if tag.group() == OPEN_TAG:
            if open_tags:
                problems.append(
                    TemplateProblem(
                        "nested",
                        f"nested <fi> tag at character {tag.start()} inside the tag "
                        f"opened at character {open_tags[-1]}: close a variable before "
                        "opening the next",
                        tag.start(),
                    )
                )
            open_tags.append(tag.start())
            continue
        if not open_tags:
            problems.append(
                TemplateProblem(
                    "stray",
                    f"stray </fi> tag at character {tag.start()} with no <fi> before it",
                    tag.start(),
                )
            )
            continue
        start = open_tags.pop()
        if open_tags:
            continue  # an inner tag of a nest, already reported
        body = text[start + len(OPEN_TAG) : tag.start()]
        if _TAG.search(body):
            continue  # the outer tag of a nest, already reported
        description = normalize_description(body)
        if description:
            variables.append(Variable(description, start, tag.end()))
        else:
            problems.append(
                TemplateProblem(
                    "empty",
                    f"empty variable description in the <fi> tag at character {start}",
                    start,
                )
            )
    for start in open_tags:
        problems.append(
            TemplateProblem(
                "unclosed",
                f"unclosed <fi> tag at character {start}: add </fi> after its description",
                start,
            )
        )
    if not variables and not problems:
        problems.append(
            TemplateProblem(
                "no_variables",
                "no variables: a template needs at least one <fi>description</fi>",
            )
        )
    return variables, problems


def validate_template(text: str) -> list[TemplateProblem]:
    """Every problem with ``text`` as a template; an empty list when it is valid."""
    if not isinstance(text, str):
        raise TypeError(f"a template is a str, not {type(text).__name__}")
    return _scan(text)[1]


def try_parse_template(text: str) -> tuple[Template | None, list[TemplateProblem]]:
    """The parsed template and no problems, or None and every problem (one scan)."""
    if not isinstance(text, str):
        raise TypeError(f"a template is a str, not {type(text).__name__}")
    variables, problems = _scan(text)
    return (None, problems) if problems else (Template(text=text, occurrences=tuple(variables)), [])


def parse_template(text: str) -> Template:
    """Parse a template, raising :class:`TemplateSyntaxError` listing every problem."""
    if not isinstance(text, str):
        raise TypeError(f"a template is a str, not {type(text).__name__}")
    variables, problems = _scan(text)
    if problems:
        raise TemplateSyntaxError(text, problems)
    return Template(text=text, occurrences=tuple(variables))
