"""OpenAI-compatible HTTP backend: vLLM, SGLang, llama.cpp server, TGI, hosted APIs.

Requests of a batch are sent concurrently (at most ``max_concurrency`` in flight, from a
pool of threads sharing keep-alive connections) to
``{base_url}/chat/completions``. Connection errors, timeouts, 429 and 5xx answers are
retried with exponential backoff and jitter, honouring ``Retry-After``; a request that
still fails becomes a completion with ``server_unavailable`` (never final: the runner
stops the stage without committing the shard, and the next run makes the call again),
and one the server refuses (another 4xx) a ``backend_error``. The API key is read from the environment variable ``api_key_env`` and never
logged.

Structured output is sent in the form the server understands (``dialect``):

- ``openai`` (OpenAI, vLLM, SGLang): ``response_format`` of type ``json_schema``;
- ``vllm`` (vLLM 0.12 and later): the same, plus ``structured_outputs`` with ``regex``
  or ``grammar``;
- ``vllm_legacy`` (vLLM before 0.12): ``guided_json`` / ``guided_regex`` /
  ``guided_grammar``;
- ``llama_cpp`` (llama.cpp's and llama-cpp-python's servers): ``response_format`` of
  type ``json_object`` with a ``schema``, and ``grammar`` (GBNF).

What the backend can do (:class:`~fineinstructions.models.llm.Capabilities`) follows from
the dialect and is set on the instance. Tokens are counted with a configured Hugging
Face ``tokenizer``, else the server's tokenize endpoint, else an estimate
(:mod:`.openai_tokens`); ``token_count_method`` says which.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from fineinstructions.errors import UserError
from fineinstructions.models.http_util import (
    backoff_delay,
    bearer_headers,
    error_details,
    retry_after,
)
from fineinstructions.models.llm import (
    Completion,
    ErrorKind,
    Request,
    TokenLogprob,
    failed,
    parse_structured,
)
from fineinstructions.models.openai_tokens import HFTokenCounter, ServerTokenCounter

Dialect = Literal["openai", "vllm", "vllm_legacy", "llama_cpp"]
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


# The body fields each dialect uses for each kind of constraint (named functions, so a
# backend stays picklable).
def _response_format_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}}


def _json_object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_object", "schema": schema}}


def _structured_regex(value: str) -> dict[str, Any]:
    return {"structured_outputs": {"regex": value}}


def _structured_grammar(value: str) -> dict[str, Any]:
    return {"structured_outputs": {"grammar": value}}


def _guided_json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"guided_json": schema}


def _guided_regex(value: str) -> dict[str, Any]:
    return {"guided_regex": value}


def _guided_grammar(value: str) -> dict[str, Any]:
    return {"guided_grammar": value}


def _gbnf_grammar(value: str) -> dict[str, Any]:
    return {"grammar": value}


@dataclass(frozen=True)
class DialectSpec:
    """How one kind of server takes structured output: the body fields for each kind
    of constraint (``None``: it takes none of that kind), and what the server does."""

    json_schema: Callable[[dict[str, Any]], dict[str, Any]]
    regex: Callable[[str], dict[str, Any]] | None = None
    grammar: Callable[[str], dict[str, Any]] | None = None
    grammar_is_gbnf: bool = False  # llama.cpp's grammars are GBNF; vLLM's are EBNF/lark
    caches_prefixes: bool = False  # known to reuse a shared prompt prefix (unknown for hosted APIs)


DIALECTS: dict[str, DialectSpec] = {
    "openai": DialectSpec(json_schema=_response_format_schema),
    "vllm": DialectSpec(
        json_schema=_response_format_schema, regex=_structured_regex, grammar=_structured_grammar,
        caches_prefixes=True,
    ),
    "vllm_legacy": DialectSpec(
        json_schema=_guided_json, regex=_guided_regex, grammar=_guided_grammar, caches_prefixes=True
    ),
    "llama_cpp": DialectSpec(
        json_schema=_json_object_schema, grammar=_gbnf_grammar, grammar_is_gbnf=True, caches_prefixes=True
    ),
}


class OpenAICompatibleLLM:
    kind = "openai"
    constrains_json_schema = True  # every dialect sends the schema for the server to enforce
    reports_logprobs = True  # asked with logprobs/top_logprobs; a server that sends none gives none

    @classmethod
    def from_config(cls, config) -> "OpenAICompatibleLLM":
        """The backend a ``[*.llm]`` table with ``backend = "openai"`` describes."""
        return cls(
            config.model, base_url=config.base_url, api_key_env=config.api_key_env, dialect=config.dialect,
            max_concurrency=config.max_concurrency, max_retries=config.max_retries, timeout=config.timeout,
            tokenizer=config.tokenizer,
        )

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        dialect: Dialect = "openai",
        max_concurrency: int = 16,
        timeout: float = 300.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        tokenizer: str | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.dialect = dialect
        spec = DIALECTS[dialect]
        self.constrains_gbnf = spec.grammar is not None and spec.grammar_is_gbnf
        self.constrains_regex = spec.regex is not None
        self.caches_prefixes = spec.caches_prefixes
        self.counts_tokens_locally = tokenizer is not None
        self.max_concurrency = max_concurrency
        # Enough requests per step to keep every connection busy while results are banked.
        self.checkpoint_every = 4 * max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.tokenizer = tokenizer
        self.retries = 0  # retried attempts so far, for reports and tests
        self.failing_since: float | None = None  # when calls began to fail for transport reasons
        # Set when the server refused a request for token log-probabilities (llama-cpp-python's
        # server without logits_all, for one): later requests no longer ask for them.
        self.logprobs_refused = False
        self._checked = False
        self._pool: Any = None  # the sending threads and their client, made on first use
        self._client: Any = None
        self._lock = threading.Lock()
        self._counter: HFTokenCounter | ServerTokenCounter = (
            HFTokenCounter(tokenizer)
            if tokenizer is not None
            else ServerTokenCounter(
                self.base_url, model, headers=self._headers, timeout=timeout, max_retries=max_retries,
                backoff_base=backoff_base, backoff_max=backoff_max,
            )
        )

    @property
    def token_count_method(self) -> str:
        """How ``count_tokens`` counts: the tokenizer, the server endpoint it found, or the estimate."""
        return self._counter.method

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **bearer_headers(self.api_key_env)}

    def load(self) -> None:
        """Check the server answers, so a wrong URL fails at once with what to start."""
        if self._checked:
            return
        import httpx

        try:
            response = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=10)
        except httpx.HTTPError as error:
            raise UserError(
                f"cannot reach the LLM server at {self.base_url} ({type(error).__name__}).\n"
                "  fix: start an OpenAI-compatible server there, for example\n"
                f"    vllm serve {self.model} --port PORT\n"
                "    python -m llama_cpp.server --model MODEL.gguf --port PORT\n"
                "  or set the backend's base_url to where one runs"
            ) from None
        if response.status_code in (401, 403):
            raise UserError(
                f"the LLM server at {self.base_url} refused the API key "
                f"(HTTP {response.status_code}); set ${self.api_key_env}"
            )
        self._checked = True

    def payload(self, request: Request) -> dict[str, Any] | str:
        """The JSON body for ``request``, or why this dialect cannot express it."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.top_logprobs and not self.logprobs_refused:
            body.update(logprobs=True, top_logprobs=request.top_logprobs)
        spec = DIALECTS[self.dialect]
        if request.json_schema is not None:
            body.update(spec.json_schema(request.json_schema))
        elif request.regex is not None or request.grammar is not None:
            kind, value = ("regex", request.regex) if request.regex is not None else ("grammar", request.grammar)
            express = spec.regex if kind == "regex" else spec.grammar
            if express is None:
                return f"the {self.dialect} dialect takes no {kind} constraint"
            body.update(express(value))
        return body

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.load()
        # Blocking requests on a pool of threads over one keep-alive connection pool:
        # measured several times faster than an asyncio client per batch, whose
        # connection-pool bookkeeping dominated at a few hundred requests/s.
        return list(self._threads().map(self._send, requests))

    def _threads(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            import httpx

            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            self._client = httpx.Client(headers=self._headers(), timeout=self.timeout, limits=limits)
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="openai-backend")
        return self._pool

    def _send(self, request: Request) -> Completion:
        import httpx

        body = self.payload(request)
        if isinstance(body, str):
            return failed(ErrorKind.BACKEND_ERROR, body)
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            asked: float | None = None
            try:
                response = self._client.post(url, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as error:
                last = f"{type(error).__name__} talking to {self.base_url}"
                self._failing()
            else:
                if response.status_code == 200:
                    self.failing_since = None
                    return self._completion(request, response.json())
                message, code = error_details(response)
                last = f"HTTP {response.status_code}: {message}"
                if "logprobs" in body and "logprob" in message.lower():
                    # The server cannot give log-probabilities: ask without them (the
                    # caller falls back to the text), now and for every later request.
                    self.logprobs_refused = True
                    body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
                    continue
                if response.status_code not in _RETRY_STATUS:
                    overflow = _is_context_overflow(response.status_code, message, code)
                    return failed(ErrorKind.CONTEXT_OVERFLOW if overflow else ErrorKind.BACKEND_ERROR, last)
                asked = retry_after(response)
                self._failing()
            if attempt == self.max_retries:
                break
            with self._lock:
                self.retries += 1
            time.sleep(self._delay(attempt, asked))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.failing_since or time.time()))
        return failed(ErrorKind.UNAVAILABLE, f"{last}, failing since {since} (gave up after {self.max_retries + 1} attempts)")

    def _failing(self) -> None:
        with self._lock:
            if self.failing_since is None:
                self.failing_since = time.time()

    def _delay(self, attempt: int, asked: float | None) -> float:
        return backoff_delay(attempt, asked, base=self.backoff_base, ceiling=self.backoff_max)

    def _completion(self, request: Request, data: dict[str, Any]) -> Completion:
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return failed(ErrorKind.BACKEND_ERROR, "the server's answer has no choices[0].message")
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return parse_structured(
            request,
            text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            cached_tokens=details.get("cached_tokens") or 0,
            logprobs=_logprobs(choice.get("logprobs")),
        )

    def count_tokens(self, text: str) -> int:
        if isinstance(self._counter, ServerTokenCounter):
            self.load()  # an unreachable server fails here with what to start
        return self._counter.count(text)

    def close(self) -> None:
        self._counter.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._client.close()
            self._pool = self._client = None

    def __getstate__(self) -> dict:
        # Threads and sockets stay with the process that opened them.
        return {**self.__dict__, "_pool": None, "_client": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


def _is_context_overflow(status: int, message: str, code: str | None) -> bool:
    """Servers say this in different words: OpenAI with a code, vLLM and llama.cpp in
    the message. Only a 400 can mean it."""
    if status != 400:
        return False
    if code == "context_length_exceeded":
        return True
    message = message.lower()
    return "context length" in message or "context window" in message


def _logprobs(data: Any) -> tuple[TokenLogprob, ...]:
    """``choices[0].logprobs.content`` of a chat completion as :class:`TokenLogprob`
    (empty when the server sent none, or sent them in a shape it does not document)."""
    try:
        return tuple(
            TokenLogprob(
                item["token"],
                float(item["logprob"]),
                tuple((top["token"], float(top["logprob"])) for top in item.get("top_logprobs") or ()),
            )
            for item in (data or {}).get("content") or ()
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return ()
