"""Token counting for the OpenAI-compatible backend, which has no model in process.

In order of preference:

1. a Hugging Face tokenizer (``tokenizer``: a hub name or a local folder), loaded with
   transformers on first use — exact, and no request to the server;
2. the server's own tokenize endpoint, found once by asking each known one in turn:
   llama.cpp's server (``POST {root}/tokenize`` with ``{"content"}``), vLLM's
   (``POST {root}/tokenize`` with ``{"model", "prompt"}``) and llama-cpp-python's
   (``POST {root}/extras/tokenize/count``), where ``root`` is the base URL without its
   ``/v1``;
3. an estimate of one token per three characters, rounded up.

Why three: BPE tokenizers of current models average about four characters a token on
English prose and somewhat fewer on code and most other Latin-script languages, so
three over-counts typical text. Over-counting only cuts a long document a little more
than it needed; under-counting would send prompts the server refuses. Text that a
tokenizer splits finer still (Chinese, Japanese, emoji) can be under-counted; the
server then answers with a ``context_overflow``, which is counted, not a crash.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.models.http_util import backoff_delay, retry_after

CHARS_PER_TOKEN = 3
ESTIMATE = f"estimate: 1 token per {CHARS_PER_TOKEN} characters"
NOT_PROBED = "the server's tokenize endpoint, else an estimate (not yet asked)"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_MEMO_SIZE = 4096


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def server_root(base_url: str) -> str:
    """``http://host:port`` for ``http://host:port/v1`` (the tokenize endpoints live there)."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _token_list_length(answer: Any) -> int | None:
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    return len(tokens) if isinstance(tokens, list) else None


def _count_field(answer: Any) -> int | None:
    count = answer.get("count") if isinstance(answer, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


@dataclass(frozen=True)
class TokenizeEndpoint:
    """One server's tokenize endpoint: where it is, what it takes and how it answers."""

    name: str  # what ``token_count_method`` says once this endpoint is chosen
    path: str  # under the server's root
    body: Callable[[str, str], dict[str, Any]]  # (model, text) -> the JSON body
    count: Callable[[Any], int | None]  # the JSON answer -> tokens (None: not an answer of this kind)


def _llama_server_body(model: str, text: str) -> dict[str, Any]:
    return {"content": text, "add_special": False}


def _vllm_body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "prompt": text, "add_special_tokens": False}


def _llama_cpp_python_body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "input": text}


ENDPOINTS = (
    TokenizeEndpoint("server: llama.cpp POST /tokenize", "/tokenize", _llama_server_body, _token_list_length),
    TokenizeEndpoint("server: vLLM POST /tokenize", "/tokenize", _vllm_body, _count_field),
    TokenizeEndpoint(
        "server: llama-cpp-python POST /extras/tokenize/count", "/extras/tokenize/count",
        _llama_cpp_python_body, _count_field,
    ),
)


class ServerTokenCounter:
    """Counts with the first of :data:`ENDPOINTS` the server answers, or else estimates.

    The endpoint is chosen on the first count and kept. Counts are remembered for the
    last few thousand texts, as a stage counts the same prompt parts again and again.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        headers: Callable[[], dict[str, str]],
        timeout: float,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        self.root = server_root(base_url)
        self.model = model
        self.headers = headers
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.method = NOT_PROBED
        self._endpoint: TokenizeEndpoint | None = None
        self._probed = False
        self._memo: dict[str, int] = {}
        self._client = None

    def count(self, text: str) -> int:
        if text in self._memo:
            return self._memo[text]
        found = self._probe(text) if not self._probed else self._ask(text)
        if found is None:  # no endpoint
            return estimate_tokens(text)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[text] = found
        return found

    def _probe(self, text: str) -> int | None:
        """Ask each known endpoint to count ``text``; keep the first that does."""
        self._probed = True
        for endpoint in ENDPOINTS:
            status, answer = self._post(endpoint, text)
            found = endpoint.count(answer) if status == 200 else None
            if found is not None:
                self._endpoint = endpoint
                self.method = endpoint.name
                return found
        self.method = ESTIMATE
        return None

    def _ask(self, text: str) -> int | None:
        if self._endpoint is None:
            return None
        status, answer = self._post(self._endpoint, text)
        found = self._endpoint.count(answer) if status == 200 else None
        if found is None:
            raise UserError(
                f"the LLM server at {self.root} stopped answering {self._endpoint.path} "
                f"(HTTP {status}) after it had counted tokens before.\n"
                "  fix: check the server, or configure a tokenizer for this backend"
            )
        return found

    def _post(self, endpoint: TokenizeEndpoint, text: str) -> tuple[int, Any]:
        """``(status, JSON answer or None)``; retries transient failures like generation does."""
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        url = self.root + endpoint.path
        for attempt in range(self.max_retries + 1):
            asked = None
            try:
                response = self._client.post(url, json=endpoint.body(self.model, text), headers=self.headers())
            except (httpx.TransportError, httpx.TimeoutException) as error:
                if attempt == self.max_retries:
                    raise UserError(
                        f"cannot reach the LLM server at {self.root} to count tokens ({type(error).__name__})"
                    ) from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt == self.max_retries:
                    try:
                        return response.status_code, response.json()
                    except ValueError:
                        return response.status_code, None
                asked = retry_after(response)
            time.sleep(backoff_delay(attempt, asked, base=self.backoff_base, ceiling=self.backoff_max))
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class HFTokenCounter:
    """Counts with a Hugging Face tokenizer (a hub name or a local folder), loaded on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.method = f"tokenizer {name}"
        self._tokenizer = None

    def count(self, text: str) -> int:
        if self._tokenizer is None:
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise MissingDependencyError(
                    "transformers", "transformers", f"counting tokens with the tokenizer {self.name!r}"
                ) from None
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.name)
            except (OSError, ValueError) as error:
                raise UserError(
                    f"cannot load the tokenizer {self.name!r} ({type(error).__name__}: {error}).\n"
                    "  fix: set the backend's tokenizer to a local tokenizer folder or a hub name "
                    "that is available here, or leave it unset to count with the server"
                ) from None
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        self._tokenizer = None
