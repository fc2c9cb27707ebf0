"""The instantiate stage: (template, document) → instruction + grounded answer (DESIGN §2.4).

Two prompt modes share the stage:

- ``prompted``: any instruct LLM, with a versioned prompt file. The user turn holds the
  document first and the template after it, and the requests of one document are sent
  one after another, so llama.cpp (previous-prompt KV reuse) and vLLM (prefix caching)
  compute each document's prefix once for its up to 6 templates.
- ``fineinstructions``: the released ``fineinstructions/template_instantiator``
  contract — the user message is the JSON ``{"instruction_template", "document"}``.

The model answers ``null`` (the template does not fit: a skip, never forced) or
``{"instruction": …, "answer": …}`` with ``<excerpt>PREFIX<...>SUFFIX</excerpt>``
markers. Where the backend takes GBNF grammars, decoding follows a per-document grammar
(:mod:`.instantiate_grammar`) in which every marker is real text of the document.
With ``region_window`` set, a template retrieved by a local (Gaussian-pooled) vector
of the document has its excerpts start in the region of that vector's chunk (the grammar
allows only those starts; a prompt without a grammar names where the region begins).
Each answer is then expanded and checked: a pair fails when a marker is unresolved or
ambiguous, when an ``<fi>`` tag survives in the instruction, when the instruction or
answer is empty, when the answer quotes one passage twice, or when less than
``min_excerpt_ratio`` of the answer is excerpts.
The stage does no file I/O.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from fineinstructions.errors import ConfigError
from fineinstructions.models.llm import (
    LLM,
    Completion,
    Request,
    capabilities,
    json_values,
    strip_fence,
)
from fineinstructions.records import DocumentRow, PairRow, RejectRow, TemplateRow
from fineinstructions.text.excerpt import SearchableDocument, expand_excerpts
from fineinstructions.text.instantiate_grammar import (
    chunk_region,
    cut_at_boundary,
    document_grammar,
    region_opening,
)
from fineinstructions.text.prompting import Prompt, load_prompt
from fineinstructions.text.template import CLOSE_TAG, OPEN_TAG

STAGE = "instantiate"
DEFAULT_PROMPT = "instantiate-v1"
FINEINSTRUCTIONS_VERSION = "fineinstructions-template_instantiator"

# Failure reasons, in the order a pair is checked (a pair is counted under its first).
FAILURE_ORDER = (
    "unresolved_marker",
    "ambiguous_marker",
    "template_tag_in_instruction",
    "empty_instruction",
    "empty_answer",
    "repeated_excerpt",
    "low_excerpt_ratio",
)
SKIP_INCOMPATIBLE = "incompatible"

Constraint = Literal["auto", "document", "schema", "none"]

OUTPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "null"},
        {
            "type": "object",
            "properties": {
                "instruction": {"type": "string", "minLength": 1},
                "answer": {"type": "string", "minLength": 1},
            },
            "required": ["instruction", "answer"],
            "additionalProperties": False,
        },
    ]
}


@dataclass
class InstantiateResult:
    """What one batch gave: grounded pairs, skips and failures (with raw outputs), counts."""

    pairs: list[PairRow] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    requests: int = 0
    documents: int = 0
    truncated_documents: int = 0
    markers: int = 0
    unresolved_markers: int = 0
    ambiguous_markers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def merge(self, other: "InstantiateResult") -> None:
        self.pairs += other.pairs
        self.rejects += other.rejects
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)
        for name in (
            "requests", "documents", "truncated_documents", "markers", "unresolved_markers",
            "ambiguous_markers", "prompt_tokens", "completion_tokens", "cached_tokens",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Instantiator:
    """Instantiates templates on documents with one LLM.

    ``constraint`` (``prompted`` mode) decides how decoding is held to the format:

    - ``document``: the per-document grammar — markers can only quote the document and
      the instruction is the template with its variables filled (GBNF backends);
    - ``schema``: a JSON schema (``null`` or ``{"instruction", "answer"}``);
    - ``none``: no constraint; the answer is parsed leniently;
    - ``auto`` (default): ``document`` where the backend takes GBNF grammars, ``schema``
      on other backends that constrain decoding to a schema, ``none`` otherwise.

    ``context_window`` (tokens) makes long documents be cut to fit, with room for the
    rest of the prompt and ``max_tokens`` of answer; ``None`` sends documents whole.
    :attr:`fit_method` says how the tokens are counted.

    ``region_window`` (a share of the document, either side of a chunk's centre; ``None``:
    anywhere) holds excerpts to the region of the chunk that retrieved the template, for
    documents embedded with ``num_chunks`` local vectors.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        mode: Literal["prompted", "fineinstructions"] = "prompted",
        prompt: str | Prompt = DEFAULT_PROMPT,
        constraint: Constraint = "auto",
        min_excerpt_ratio: float = 0.8,
        max_tokens: int = 320,
        max_excerpts: int = 3,
        context_window: int | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        region_window: float | None = None,
        num_chunks: int = 5,
    ) -> None:
        if mode not in ("prompted", "fineinstructions"):
            raise ValueError(f"unknown instantiate mode {mode!r}; use 'prompted' or 'fineinstructions'")
        if constraint not in ("auto", "document", "schema", "none"):
            raise ValueError(f"unknown constraint {constraint!r}; use auto, document, schema or none")
        self.llm = llm
        self.mode = mode
        self.min_excerpt_ratio = min_excerpt_ratio
        self.max_tokens = max_tokens
        self.max_excerpts = max_excerpts
        self.context_window = context_window
        self.temperature = temperature
        self.seed = seed
        self.region_window = region_window
        self.num_chunks = num_chunks
        if mode == "fineinstructions":
            self.prompt: Prompt | None = None
            self.prompt_version = FINEINSTRUCTIONS_VERSION
            self.constraint = "none" if constraint == "auto" else constraint
            return
        loaded = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
        for number, example in enumerate(loaded.examples, 1):
            if not example.get("document") or not example.get("template"):
                raise ConfigError(f"{loaded.source}: example {number} needs a document and a template")
            if not (example.get("instruction") and example.get("answer")) and example.get("reply") != "null":
                raise ConfigError(
                    f"{loaded.source}: example {number} needs an instruction and an answer, or reply = \"null\""
                )
        self.prompt = loaded
        self.prompt_version = loaded.version
        if constraint == "auto":
            can = capabilities(llm)
            constraint = "document" if can.constrains_gbnf else "schema" if can.constrains_json_schema else "none"
        self.constraint = constraint

    @property
    def model(self) -> str:
        return self.llm.identity

    @property
    def fit_method(self) -> str | None:
        """How documents are measured against ``context_window``: the backend's way of
        counting tokens (for a server, known once it has been asked), or ``None`` when
        documents are sent whole."""
        if self.context_window is None:
            return None
        return getattr(self.llm, "token_count_method", "the backend's count_tokens")

    # -- requests ---------------------------------------------------------------------

    def region(self, document: str, chunk: int) -> tuple[int, int] | None:
        """Where in ``document`` excerpts of a template retrieved by ``chunk`` start."""
        if self.region_window is None:
            return None
        return chunk_region(chunk, self.num_chunks, len(document), self.region_window)

    def _turns(self, document: str, template: str, region: tuple[int, int] | None = None) -> list[tuple[str, str]]:
        if self.prompt is None:
            return [("user", released_user_turn(document, template))]
        turns: list[tuple[str, str]] = [("system", self.prompt.system)]
        for example in self.prompt.examples:
            turns.append(("user", _user_turn(example["document"].strip(), example["template"])))
            if example.get("reply") == "null":
                turns.append(("assistant", "null"))
            else:
                answer = {"instruction": example["instruction"], "answer": example["answer"]}
                turns.append(("assistant", json.dumps(answer, ensure_ascii=False)))
        turn = _user_turn(document, template)
        hint = dict(self.prompt.fields).get("region_hint", "") if region is not None and self.constraint != "document" else ""
        if hint:
            turn += "\n\n" + hint.replace("{start}", region_opening(document, region))
        turns.append(("user", turn))
        return turns

    def request(self, document: str, template: str, region: tuple[int, int] | None = None) -> Request:
        options: dict[str, Any] = dict(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            prompt_version=self.prompt_version,
        )
        if self.constraint == "document":
            grammar = document_grammar(document, template, max_excerpts=self.max_excerpts, region=region)
            if grammar is not None:
                options["grammar"] = grammar
            else:  # no usable anchor (or a huge document): the schema still holds the format
                options["json_schema"] = OUTPUT_SCHEMA
        elif self.constraint == "schema":
            options["json_schema"] = OUTPUT_SCHEMA
        return Request.chat(*self._turns(document, template, region), **options)

    def fit(self, document: str, template: str) -> str:
        """``document``, cut (at a sentence or word boundary) so that its request fits
        ``context_window``; unchanged when it fits or no window is set."""
        if self.context_window is None:
            return document
        turns = self._turns("", template)
        overhead = sum(self.llm.count_tokens(content) for _, content in turns)
        overhead += 8 * (len(turns) + 1)  # chat-template markup per turn
        budget = self.context_window - self.max_tokens - overhead
        if budget <= 0:
            return ""
        count = self.llm.count_tokens(document)
        text = document
        while count > budget and text:
            keep = int(len(text) * budget / count * 0.97)
            text = cut_at_boundary(text, keep)
            count = self.llm.count_tokens(text)
        return text

    # -- the stage ----------------------------------------------------------------------

    def __call__(self, batch: Sequence[tuple]) -> InstantiateResult:
        """Instantiate each document's templates; requests go out grouped by document.

        Each item is ``(document, templates)`` or ``(document, templates, chunks)``, where
        ``chunks[i]`` is the document vector that retrieved ``templates[i]`` (0: global)."""
        jobs: list[tuple[DocumentRow, str, TemplateRow, tuple[int, int] | None]] = []
        result = InstantiateResult()
        for document, templates, *rest in batch:
            if not templates:
                continue
            chunks = rest[0] if rest else [0] * len(templates)
            result.documents += 1
            # Cut for the longest template, so every request of the document fits.
            seen = self.fit(document.text, max((t.template for t in templates), key=len))
            if len(seen) < len(document.text):
                result.truncated_documents += 1
            for template, chunk in zip(templates, chunks, strict=True):
                # The region is a share of the whole document (what was embedded), in the
                # characters the model sees.
                region = self.region(document.text, chunk)
                if region is not None and region[0] >= len(seen):
                    region = None  # the region was cut off: anywhere in what remains
                jobs.append((document, seen, template, region))
        if not jobs:
            return result
        completions = self.llm.generate([self.request(seen, t.template, region) for _, seen, t, region in jobs])
        searchable: dict[str, SearchableDocument] = {}
        for (document, seen, template, _), completion in zip(jobs, completions, strict=True):
            result.requests += 1
            result.prompt_tokens += completion.prompt_tokens
            result.completion_tokens += completion.completion_tokens
            result.cached_tokens += completion.cached_tokens
            if document.id not in searchable:
                searchable[document.id] = SearchableDocument(seen)
            self._judge_output(document, seen, searchable[document.id], template, completion, result)
        return result

    def _judge_output(
        self,
        document: DocumentRow,
        seen: str,
        searchable: SearchableDocument,
        template: TemplateRow,
        completion: Completion,
        result: InstantiateResult,
    ) -> None:
        def reject(reason: str, detail: str, *, skip: bool = False) -> None:
            (result.skipped if skip else result.failed)[reason] += 1
            result.rejects.append(
                RejectRow(
                    stage=STAGE,
                    input_id=PairRow.make_id(document.id, template.id),
                    reason=reason,
                    detail=detail,
                    input=f"document {document.id} + template {template.id}: {template.template}",
                    raw_output=completion.text,
                    model=self.model,
                    prompt_version=self.prompt_version,
                )
            )

        if completion.finish_reason == "length":
            return reject("truncated", "the model reached max_tokens before finishing its answer")
        if completion.error_kind is not None:
            return reject(completion.error_kind.value, completion.error_detail)
        parsed = parse_answer(completion.text, completion.parsed)
        if parsed is None:
            return reject(SKIP_INCOMPATIBLE, "the model answered null: the template does not fit", skip=True)
        if parsed is False:
            return reject("invalid_output", "neither null nor a JSON object with instruction and answer")
        instruction, raw_answer = parsed
        expansion = expand_excerpts(raw_answer, searchable)
        result.markers += len(expansion.spans)
        problems: dict[str, str] = {}
        for error in expansion.errors:
            result.unresolved_markers += error.kind == "unresolved"
            result.ambiguous_markers += error.kind == "ambiguous"
            problems.setdefault(f"{error.kind}_marker", error.message)
        if OPEN_TAG in instruction or CLOSE_TAG in instruction:
            problems["template_tag_in_instruction"] = "a <fi> variable of the template was left unfilled"
        if not instruction.strip():
            problems["empty_instruction"] = "the instruction is empty"
        if not expansion.text.strip():
            problems["empty_answer"] = "the answer is empty"
        resolved = [span for span in expansion.spans if span is not None]
        if len(set(resolved)) < len(resolved):
            problems["repeated_excerpt"] = "the answer quotes the same passage more than once"
        elif expansion.excerpt_ratio < self.min_excerpt_ratio:
            problems["low_excerpt_ratio"] = (
                f"{expansion.excerpt_ratio:.2f} of the answer is excerpts; at least "
                f"{self.min_excerpt_ratio} must be"
            )
        if problems:
            reason = next(r for r in FAILURE_ORDER if r in problems)
            return reject(reason, "; ".join(problems.values()))
        result.pairs.append(
            PairRow(
                id=PairRow.make_id(document.id, template.id),
                document_id=document.id,
                template_id=template.id,
                query_id=template.query_id,
                instruction=instruction.strip(),
                answer=expansion.text.strip(),
                excerpt_ratio=expansion.excerpt_ratio,
                excerpt_spans=tuple(span for span in expansion.spans if span is not None),
                instantiate_model=self.model,
                instantiate_prompt_version=self.prompt_version,
                document_chars=len(seen) if len(seen) < len(document.text) else None,
            )
        )


def released_user_turn(document: str, template: str) -> str:
    """The user message of the released instantiator's contract (``fineinstructions``
    mode, and the silver data its students learn from)."""
    return json.dumps({"instruction_template": template, "document": document}, ensure_ascii=False)


def _user_turn(document: str, template: str) -> str:
    return f"Document:\n{document}\n\nTemplate: {template}"


INSTRUCTION_KEYS = ("instruction", "instantiated_instruction")
ANSWER_KEYS = ("answer", "response", "output")


def parse_answer(text: str | None, parsed: Any = None) -> tuple[str, str] | None | Literal[False]:
    """``(instruction, answer)``, ``None`` for an explicit ``null`` (incompatible), or
    ``False`` when the output is neither. Lenient: a fenced or wrapped JSON object is
    found; ``instruction`` or ``instantiated_instruction`` (the released dataset's column
    name) is accepted for the instruction, ``answer``/``response``/``output`` for the
    answer."""
    if parsed is None and text is not None:
        if strip_fence(text) in ("null", "None", '"null"'):
            return None
        parsed = next((v for v in json_values(text) if isinstance(v, dict)), None)
    if parsed is None:
        return False
    if isinstance(parsed, dict):
        instruction = next((parsed[k] for k in INSTRUCTION_KEYS if k in parsed), None)
        answer = next((parsed[k] for k in ANSWER_KEYS if k in parsed), None)
        if instruction is None and answer is None and all(v is None for v in parsed.values()):
            return None
        if isinstance(instruction, str) and isinstance(answer, str):
            return instruction, answer
    return False

