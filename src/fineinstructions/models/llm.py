"""The one interface every LLM stage goes through.

A stage builds :class:`Request` objects and calls ``backend.generate(requests)``, which
returns one :class:`Completion` per request, in order. A request that fails (bad output
under a schema, a prompt longer than the context window, a server error after retries)
yields a completion whose ``error_kind`` says which (:class:`ErrorKind`); it never
raises out of the batch, so one bad request cannot fail the other requests of a batch.

What a backend can do is declared on it as plain attributes (:data:`CAPABILITIES`) and
read through :func:`capabilities`, never decided from its name.

Backends are looked up by name in :data:`BACKENDS` and imported only when used, so
importing this module stays cheap and a missing optional dependency is reported with
the command that installs it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from fineinstructions.errors import MissingDependencyError, UserError


class ErrorKind(str, Enum):
    """Why a completion failed. Stages count rejects under these values."""

    CONTEXT_OVERFLOW = "context_overflow"  # the prompt does not fit the model's window
    INVALID_OUTPUT = "invalid_output"  # output does not parse or match the schema
    BACKEND_ERROR = "backend_error"  # the backend failed for this request (a bad request, a crash, …)
    # The server could not be reached, or kept answering "busy" (429, 5xx), through every
    # retry: nothing is wrong with the request, so it is never final. The runner stops the
    # stage without committing the shard, and the next run makes the call again.
    UNAVAILABLE = "server_unavailable"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One generation request.

    ``json_schema`` constrains the output to JSON matching the schema; ``regex`` and
    ``grammar`` (GBNF for llama.cpp, EBNF/lark for vLLM) constrain it where the backend
    supports them. At most one constraint may be given.

    ``top_logprobs`` asks for the log-probabilities of that many most likely tokens at
    each generated position (the model's own distribution, before any constraint);
    backends that declare ``reports_logprobs`` return them in
    :attr:`Completion.logprobs`, others return none.
    """

    messages: tuple[Message, ...]
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    grammar: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    prompt_version: str = ""
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be between 0 and 20")
        constraints = [c for c in (self.json_schema, self.regex, self.grammar) if c is not None]
        if len(constraints) > 1:
            raise ValueError("give at most one of json_schema, regex and grammar")
        if not self.messages:
            raise ValueError("a request needs at least one message")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")

    @classmethod
    def chat(cls, *turns: tuple[str, str], **options: Any) -> "Request":
        """``Request.chat(("system", "…"), ("user", "…"), max_tokens=64)``."""
        return cls(messages=tuple(Message(role=r, content=c) for r, c in turns), **options)

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the output, as plain JSON-able data."""
        data = asdict(self)
        data["messages"] = [[m["role"], m["content"]] for m in data["messages"]]
        data["stop"] = list(self.stop)
        if not self.top_logprobs:
            del data["top_logprobs"]  # requests without it keep the keys they always had
        return data


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token: its text, its log-probability and the most likely tokens at
    its position (``top``: ``(text, logprob)`` pairs, most likely first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_data(cls, data: Any) -> "TokenLogprob":
        if isinstance(data, dict):
            return cls(data["token"], float(data["logprob"]), tuple((t, float(lp)) for t, lp in data.get("top", ())))
        token, logprob, top = data
        return cls(token, float(logprob), tuple((t, float(lp)) for t, lp in top))


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """What a backend returned for one request.

    ``parsed`` holds the decoded JSON when the request had a schema and the output
    parsed. ``error_kind`` is ``None`` on success, otherwise why it failed, with a
    human-readable ``error_detail``.
    """

    text: str = ""
    parsed: Any = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_kind: ErrorKind | None = None
    error_detail: str = ""
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()

    def __post_init__(self) -> None:
        if self.error_kind is not None and not isinstance(self.error_kind, ErrorKind):
            object.__setattr__(self, "error_kind", ErrorKind(self.error_kind))
        if self.logprobs and not isinstance(self.logprobs[0], TokenLogprob):
            object.__setattr__(self, "logprobs", tuple(TokenLogprob.from_data(t) for t in self.logprobs))
        elif isinstance(self.logprobs, list):
            object.__setattr__(self, "logprobs", tuple(self.logprobs))

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    def to_json(self) -> str:
        data = asdict(self)
        data["error_kind"] = self.error_kind.value if self.error_kind else None
        if not self.logprobs:
            del data["logprobs"]
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Completion":
        data = json.loads(text)
        if "error" in data:  # written before errors were typed: "kind: detail"
            kind, detail = _split_legacy_error(data.pop("error"))
            data.setdefault("error_kind", kind)
            data.setdefault("error_detail", detail)
        return cls(**data)


def _split_legacy_error(error: str | None) -> tuple[ErrorKind | None, str]:
    if not error:
        return None, ""
    kind, _, detail = error.partition(": ")
    try:
        return ErrorKind(kind), detail
    except ValueError:  # an unknown kind: keep the whole text as the detail
        return ErrorKind.BACKEND_ERROR, error


def failed(kind: ErrorKind, detail: str, *, prompt_tokens: int = 0) -> Completion:
    return Completion(error_kind=kind, error_detail=detail, prompt_tokens=prompt_tokens)


def context_overflow(prompt_tokens: int, window: int) -> Completion:
    """The completion of a request whose prompt does not fit the model's window."""
    return failed(
        ErrorKind.CONTEXT_OVERFLOW,
        f"the prompt has {prompt_tokens} tokens; the context window holds {window}",
        prompt_tokens=prompt_tokens,
    )


def parse_structured(request: Request, text: str, **fields: Any) -> Completion:
    """A completion for ``text``; with a schema, the parsed JSON or an ``invalid_output`` error."""
    if request.json_schema is None:
        return Completion(text=text, **fields)
    try:
        parsed = json.loads(text, strict=False)  # raw newlines inside strings are fine
    except json.JSONDecodeError as error:
        detail = f"not JSON ({error.msg} at {error.pos})"
        return Completion(text=text, error_kind=ErrorKind.INVALID_OUTPUT, error_detail=detail, **fields)
    problem = schema_problem(parsed, request.json_schema)
    if problem:
        return Completion(text=text, error_kind=ErrorKind.INVALID_OUTPUT, error_detail=problem, **fields)
    return Completion(text=text, parsed=parsed, **fields)


_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def schema_problem(value: Any, schema: dict[str, Any], path: str = "$") -> str | None:
    """The first way ``value`` breaks the schema's structural rules, or ``None``.

    Checks the keywords constrained decoding enforces: ``type`` (one or a list),
    ``enum``, ``const``, ``properties``/``required``/``additionalProperties: false``,
    ``items``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern`` and
    ``anyOf``.
    """
    if "anyOf" in schema:
        if all(schema_problem(value, option, path) for option in schema["anyOf"]):
            return f"{path}: matches none of anyOf"
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        ok = any(
            isinstance(value, _JSON_TYPES[name])
            and not (name in ("integer", "number") and isinstance(value, bool))
            for name in names
        )
        if not ok:
            return f"{path}: expected {'/'.join(names)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: expected {schema['const']!r}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{path}: missing {name!r}"
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                problem = schema_problem(item, properties[name], f"{path}.{name}")
                if problem:
                    return problem
            elif schema.get("additionalProperties") is False:
                return f"{path}: unexpected {name!r}"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problem = schema_problem(item, schema["items"], f"{path}[{index}]")
            if problem:
                return problem
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path}: {value} < minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path}: {value} > maximum {schema['maximum']}"
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{path}: shorter than {schema['minLength']}"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path}: longer than {schema['maxLength']}"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{path}: does not match {schema['pattern']!r}"
    return None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, as it declares it on its class (or, where a constructor
    argument decides it, on the instance in ``__init__``) under these same names."""

    constrains_json_schema: bool = False  # decoding is held to a JSON schema, not just checked after
    constrains_gbnf: bool = False  # requests may carry a GBNF grammar
    constrains_regex: bool = False  # requests may carry a regular expression
    counts_tokens_locally: bool = False  # count_tokens uses the model's own tokenizer in process
    caches_prefixes: bool = False  # a prompt prefix shared with an earlier request is computed once
    reports_logprobs: bool = False  # completions carry token log-probabilities when asked (top_logprobs)


CAPABILITIES = tuple(f.name for f in fields(Capabilities))


def capabilities(llm: Any) -> Capabilities:
    """What ``llm`` can do. The one place capabilities are read; the request cache
    forwards its backend's, and an object that declares none can do none of it."""
    return Capabilities(**{name: bool(getattr(llm, name, False)) for name in CAPABILITIES})


@runtime_checkable
class LLM(Protocol):
    """A batch-first LLM backend.

    ``identity`` names the backend kind and the exact model (file, revision or served
    name) so that cached completions are never shared between different models.
    ``kind`` is the name it is registered under (for messages; no decision reads it).
    Each backend also declares the attributes of :class:`Capabilities`,
    ``token_count_method`` (how ``count_tokens`` counts, in a few words) and
    ``checkpoint_every`` (how many requests a caller may send in one ``generate`` call
    and bank the results without slowing the backend: 1 for one that runs requests one
    at a time, ``None`` for one that needs the whole batch at once).
    """

    kind: str
    token_count_method: str
    checkpoint_every: int | None

    @property
    def identity(self) -> str: ...

    def load(self) -> None: ...

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


# name -> ("module:Class", extra that provides its dependencies, the dependency's import name)
BACKENDS: dict[str, tuple[str, str | None, str | None]] = {
    "llama_cpp": ("fineinstructions.models.llama_cpp_backend:LlamaCppLLM", "embedded", "llama_cpp"),
    "openai": ("fineinstructions.models.openai_backend:OpenAICompatibleLLM", None, None),
    "vllm": ("fineinstructions.models.vllm_backend:VLLMLLM", "vllm", "vllm"),
    "transformers": (
        "fineinstructions.models.transformers_backend:TransformersLLM",
        "transformers",
        "transformers",
    ),
    "fake": ("fineinstructions.models.fake:ScriptedLLM", None, None),
}


def backend_class(name: str) -> type:
    """The backend class registered under ``name``, imported now."""
    if name not in BACKENDS:
        raise UserError(f"unknown LLM backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    target, extra, dependency = BACKENDS[name]
    if dependency is not None and importlib.util.find_spec(dependency) is None:
        raise MissingDependencyError(dependency.replace("_", "-"), extra or name, f"the {name} backend")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def strip_fence(text: str) -> str:
    """``text`` without surrounding whitespace and a Markdown code fence around it."""
    return _FENCE.sub("", text.strip())


def json_values(text: str) -> Iterator[Any]:
    """Every JSON value that starts at a ``{`` of ``text`` (a Markdown code fence around
    it is ignored), in order: how lenient parsers find a model's wrapped or prefixed JSON."""
    text = strip_fence(text)
    decoder = json.JSONDecoder(strict=False)
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        yield value


def request_key(backend_identity: str, request: Request) -> str:
    """The cache key of a request on a given model: a hash of everything that matters."""
    payload = json.dumps(
        {"model": backend_identity, "request": request.canonical()},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


__all__ = [
    "BACKENDS",
    "CAPABILITIES",
    "LLM",
    "Capabilities",
    "Completion",
    "ErrorKind",
    "Message",
    "Request",
    "TokenLogprob",
    "backend_class",
    "capabilities",
    "context_overflow",
    "failed",
    "json_values",
    "parse_structured",
    "request_key",
    "schema_problem",
    "strip_fence",
]
