"""The one interface every LLM stage goes through.

A stage builds :class:`Request` objects and calls ``backend.generate(requests)``, which
returns one :class:`Completion` per request, in order. A request that fails (bad output
under a schema, a prompt longer than the context window, a server error after retries)
yields a completion with ``error`` set; it never raises out of the batch, so one bad
request cannot fail the other requests of a batch.

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
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from fineinstructions.errors import MissingDependencyError, UserError

# Error kinds a completion can carry. Stages count skips and failures by these.
CONTEXT_OVERFLOW = "context_overflow"  # the prompt does not fit the model's window
INVALID_OUTPUT = "invalid_output"  # output does not parse or match the schema
BACKEND_ERROR = "backend_error"  # the backend failed (server error after retries, …)


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

    def __post_init__(self) -> None:
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
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """What a backend returned for one request.

    ``parsed`` holds the decoded JSON when the request had a schema and the output
    parsed. ``error`` is ``None`` on success, otherwise ``"kind: detail"`` with a kind
    of ``context_overflow``, ``invalid_output`` or ``backend_error``.
    """

    text: str = ""
    parsed: Any = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_kind(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Completion":
        return cls(**json.loads(text))


def failed(kind: str, detail: str, *, prompt_tokens: int = 0) -> Completion:
    return Completion(error=f"{kind}: {detail}", prompt_tokens=prompt_tokens)


def context_overflow(prompt_tokens: int, window: int) -> Completion:
    """The completion of a request whose prompt does not fit the model's window."""
    return failed(
        CONTEXT_OVERFLOW,
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
        return Completion(
            text=text, error=f"{INVALID_OUTPUT}: not JSON ({error.msg} at {error.pos})", **fields
        )
    problem = schema_problem(parsed, request.json_schema)
    if problem:
        return Completion(text=text, error=f"{INVALID_OUTPUT}: {problem}", **fields)
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


@runtime_checkable
class LLM(Protocol):
    """A batch-first LLM backend.

    ``identity`` names the backend kind and the exact model (file, revision or served
    name) so that cached completions are never shared between different models.
    """

    kind: str

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


def backend_of(llm: Any) -> tuple[str | None, str | None]:
    """``(kind, dialect)`` of the backend under ``llm``, seeing through the request cache."""
    inner = getattr(llm, "backend", llm)
    return getattr(inner, "kind", None), getattr(inner, "dialect", None)


def takes_gbnf(llm: Any) -> bool:
    """Whether requests to ``llm`` may carry a GBNF grammar (llama.cpp, in-process or served)."""
    kind, dialect = backend_of(llm)
    return kind == "llama_cpp" or (kind == "openai" and dialect == "llama_cpp")


def constrains_decoding(llm: Any) -> bool:
    """Whether ``llm``'s backend holds decoding to a JSON schema (not just checks it after)."""
    return backend_of(llm)[0] in ("llama_cpp", "openai", "vllm")


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
    "BACKEND_ERROR",
    "CONTEXT_OVERFLOW",
    "INVALID_OUTPUT",
    "LLM",
    "Completion",
    "Message",
    "Request",
    "backend_class",
    "backend_of",
    "constrains_decoding",
    "json_values",
    "strip_fence",
    "takes_gbnf",
    "context_overflow",
    "failed",
    "parse_structured",
    "request_key",
    "schema_problem",
]
