"""The templatize stage: queries → instruction templates with compatible document
descriptions (DESIGN §2.2).

Two prompt modes share the stage:

- ``prompted``: any instruct LLM, with a versioned prompt file (system instructions and
  worked examples as chat turns) and JSON output. Where the backend constrains decoding,
  the JSON schema's ``pattern`` makes ``template`` contain at least one well-formed
  ``<fi>…</fi>`` tag, so even a tiny model cannot answer without a variable;
- ``fineinstructions``: the released ``fineinstructions/query_templatizer`` contract —
  the bare query as the only user message, one JSON object out.

Every answer then goes through :func:`fineinstructions.text.genericity.template_problems`.
The stage does no file I/O: queries in, :class:`TemplatizeResult` out.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from fineinstructions.errors import ConfigError
from fineinstructions.models.llm import LLM, Completion, Request, capabilities, json_values
from fineinstructions.records import QueryRow, RejectRow, TemplateRow
from fineinstructions.text.genericity import template_problems
from fineinstructions.text.prompting import Prompt, load_prompt
from fineinstructions.text.template import parse_template
from fineinstructions.text.templatize_grammar import query_template_grammar

STAGE = "templatize"
DEFAULT_PROMPT = "templatize-v1"
FINEINSTRUCTIONS_VERSION = "fineinstructions-query_templatizer"

# Literal text: any JSON-safe character but "<", or "<" not starting a tag. A variable:
# "<fi>" + a description without "<" + "</fi>". At least one variable.
# (Plain groups only: llama.cpp's schema converter takes no "(?:".)
_LITERAL = r'([^<"\\\x00-\x1f]|<[^f/<"\\\x00-\x1f])'
TEMPLATE_PATTERN = rf'^{_LITERAL}*(<fi>[^<"\\\x00-\x1f]+</fi>{_LITERAL}*)+$'


def output_schema(*, constrain_template: bool) -> dict[str, Any]:
    template: dict[str, Any] = {"type": "string", "minLength": 1}
    if constrain_template:
        template["pattern"] = TEMPLATE_PATTERN
    return {
        "type": "object",
        "properties": {
            "template": template,
            "compatible_document_description": {"type": "string", "minLength": 1},
        },
        "required": ["template", "compatible_document_description"],
        "additionalProperties": False,
    }


@dataclass
class TemplatizeResult:
    """What one batch gave: valid templates, rejects with their raw output, and counts."""

    templates: list[TemplateRow] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    failed: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


Constraint = Literal["auto", "query", "pattern", "none"]
# What ``auto`` resolves to in ``fineinstructions`` mode: no constraint in the request.
UNCONSTRAINED = "unconstrained"


class Templatizer:
    """Turns batches of queries into templates with one LLM.

    ``constraint`` decides how decoding is held to the format, in either mode:

    - ``query``: a per-query grammar (:mod:`.templatize_grammar`) — the template is the
      query with runs of words replaced by tags; backends that take GBNF grammars only;
    - ``pattern``: the JSON schema's ``pattern`` requires at least one ``<fi>`` tag;
    - ``none``: a plain JSON schema; validation afterwards does all the work;
    - ``auto`` (default): in ``prompted`` mode, ``query`` where the backend takes GBNF
      grammars, ``pattern`` where it constrains decoding to a schema, ``none``
      otherwise; in ``fineinstructions`` mode, no constraint at all (``unconstrained``):
      the released model writes its own JSON, which is parsed leniently.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        mode: Literal["prompted", "fineinstructions"] = "prompted",
        prompt: str | Prompt = DEFAULT_PROMPT,
        constraint: Constraint = "auto",
        temperature: float = 0.0,
        seed: int = 0,
        max_tokens: int | None = None,
    ) -> None:
        if mode not in ("prompted", "fineinstructions"):
            raise ValueError(f"unknown templatize mode {mode!r}; use 'prompted' or 'fineinstructions'")
        if constraint not in ("auto", "query", "pattern", "none"):
            raise ValueError(f"unknown constraint {constraint!r}; use auto, query, pattern or none")
        can = capabilities(llm)
        if constraint == "query" and not can.constrains_gbnf:
            raise ConfigError(
                f"templatize constraint 'query' needs a backend that takes GBNF grammars; "
                f"{llm.identity} takes none.\n"
                "  fix: set templatize.constraint to 'pattern', 'none' or 'auto', or use a llama.cpp "
                "backend (in process, or a server with dialect 'llama_cpp')"
            )
        self.llm = llm
        self.mode = mode
        self.temperature = temperature
        self.seed = seed
        self.max_tokens = max_tokens
        self._example_openings: set[tuple[str, ...]] = set()
        if mode == "fineinstructions":
            self.prompt: Prompt | None = None
            self.prompt_version = FINEINSTRUCTIONS_VERSION
            self.constraint = UNCONSTRAINED if constraint == "auto" else constraint
            return
        loaded = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
        self.prompt = loaded.require("query", "template", "compatible_document_description")
        self._example_openings = {
            _opening(example["compatible_document_description"]) for example in self.prompt.examples
        }
        self.prompt_version = self.prompt.version
        if constraint == "auto":
            constraint = "query" if can.constrains_gbnf else "pattern" if can.constrains_json_schema else "none"
        self.constraint = constraint

    def _copies_example(self, description: str) -> bool:
        return _opening(description) in self._example_openings

    @property
    def model(self) -> str:
        return self.llm.identity

    def request(self, query: str) -> Request:
        # Room for a template about as long as the query, plus a description.
        max_tokens = self.max_tokens or min(1024, 160 + len(query) // 2)
        options: dict[str, Any] = dict(
            max_tokens=max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            prompt_version=self.prompt_version,
        )
        grammar = query_template_grammar(query) if self.constraint == "query" else None
        if grammar is not None:
            options["grammar"] = grammar
        elif self.constraint != UNCONSTRAINED:  # a query too long for its own grammar falls back to the pattern
            options["json_schema"] = output_schema(constrain_template=self.constraint != "none")
        if self.prompt is None:
            return Request.chat(("user", query), **options)
        turns: list[tuple[str, str]] = [("system", self.prompt.system)]
        for example in self.prompt.examples:
            answer = {
                "template": example["template"],
                "compatible_document_description": example["compatible_document_description"],
            }
            turns.append(("user", example["query"]))
            turns.append(("assistant", json.dumps(answer, ensure_ascii=False)))
        turns.append(("user", query))
        return Request.chat(*turns, **options)

    def __call__(self, queries: Sequence[QueryRow]) -> TemplatizeResult:
        completions = self.llm.generate([self.request(q.text) for q in queries])
        result = TemplatizeResult()
        for query, completion in zip(queries, completions, strict=True):
            result.prompt_tokens += completion.prompt_tokens
            result.completion_tokens += completion.completion_tokens
            result.cached_tokens += completion.cached_tokens
            outcome = self.judge_output(query, completion)
            if isinstance(outcome, TemplateRow):
                result.templates.append(outcome)
            else:
                result.failed[outcome.reason] += 1
                result.rejects.append(outcome)
        return result

    def judge_output(self, query: QueryRow, completion: Completion) -> TemplateRow | RejectRow:
        """The template a completion gives for ``query``, or why it gives none."""

        def reject(reason: str, detail: str) -> RejectRow:
            return RejectRow(
                stage=STAGE,
                input_id=query.id,
                reason=reason,
                detail=detail,
                input=query.text,
                raw_output=completion.text,
                model=self.model,
                prompt_version=self.prompt_version,
            )

        if completion.finish_reason == "length":
            return reject("truncated", "the model reached max_tokens before finishing its answer")
        if completion.error_kind is not None:
            return reject(completion.error_kind.value, completion.error_detail)
        fields = completion.parsed if completion.parsed is not None else lenient_fields(completion.text)
        if not isinstance(fields, dict):
            return reject("invalid_output", "no JSON object with template and compatible_document_description")
        template = str(fields.get("template") or "").strip()
        description = str(fields.get("compatible_document_description") or "").strip()
        problems = template_problems(template, description, query.text)
        if not problems and self._copies_example(description):
            return reject(
                "description_copies_example",
                "the description repeats a worked example of the prompt, not this query's documents",
            )
        if problems:
            first = problems[0]
            detail = "; ".join(p.detail for p in problems)
            return reject(first.reason, detail)
        parsed = parse_template(template)
        return TemplateRow(
            id=TemplateRow.make_id(template, description),
            query_id=query.id,
            source=query.source,
            template=template,
            compatible_document_description=description,
            variables=tuple(parsed.variables),
            complexity=parsed.complexity,
            model=self.model,
            prompt_version=self.prompt_version,
        )


# A description opening with the same words as a worked example's was copied from it.
EXAMPLE_PREFIX_WORDS = 8


def _opening(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\w+", text.casefold())[:EXAMPLE_PREFIX_WORDS])


def lenient_fields(text: str | None) -> dict[str, Any] | None:
    """The first JSON object in ``text`` holding a ``template`` (searched in nested
    objects too), as models trained to answer in JSON sometimes wrap or nest it."""
    if not text:
        return None
    for value in json_values(text):
        found = _find_template_object(value)
        if found is not None:
            return found
    return None


def _find_template_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        if "template" in value:
            return value
        for child in value.values():
            found = _find_template_object(child)
            if found is not None:
                return found
    elif isinstance(value, list):
        for child in value:
            found = _find_template_object(child)
            if found is not None:
                return found
    return None

