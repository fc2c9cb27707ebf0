"""Harmful-content checks of queries: an offline lexicon (the default) or an
OpenAI-compatible moderation endpoint.

A checker answers a batch of texts with one verdict each: None when the text is fine,
otherwise the name of the harm category it falls in.
"""

from __future__ import annotations

import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from fineinstructions.config import QueriesConfig
from fineinstructions.errors import ConfigError, UserError
from fineinstructions.models.http_util import (
    backoff_delay,
    bearer_headers,
    error_details,
    retry_after,
)

_MACRO = re.compile(r"\{([a-z_]+)\}")
_WHITESPACE = re.compile(r"\s+")
_RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
FLAGGED = "flagged"  # a flagged answer that names no category


class HarmChecker(Protocol):
    """Says which texts are harmful, a batch at a time."""

    name: str

    def check(self, texts: Sequence[str]) -> list[str | None]:
        """One verdict per text, in order: None, or the name of a harm category."""
        ...


def _lexicon_text(path: str | Path | None) -> tuple[str, str]:
    if path is None:
        packaged = resources.files("fineinstructions") / "moderation" / "lexicon.json"
        return "fineinstructions/moderation/lexicon.json", packaged.read_text("utf-8")
    try:
        return str(path), Path(path).read_text("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the lexicon ({error.strerror})") from None


class LexiconHarmChecker:
    """Regular expressions for requests for instructions to cause serious harm, no network.

    The lexicon (``fineinstructions/moderation/lexicon.json`` unless ``path`` names
    another) is JSON with a ``version``, ``macros`` (name -> regex fragment, used as
    ``{name}`` in patterns) and ``categories`` (name -> list of patterns). Patterns are
    written for precision: they match a request such as "how to make a pipe bomb at
    home", not a mention such as "history of the atomic bomb". Texts are searched with
    whitespace collapsed and curly apostrophes made straight, ignoring case; the first
    category (in file order) with a matching pattern names the text.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        where, text = _lexicon_text(path)
        try:
            lexicon = json.loads(text)
            macros: dict[str, str] = lexicon.get("macros", {})
            categories: dict[str, list[str]] = lexicon["categories"]
            self.version = str(lexicon["version"])
        except (ValueError, KeyError, AttributeError, TypeError) as error:
            raise ConfigError(
                f"{where}: not a lexicon ({error}); it needs 'version' and 'categories'"
            ) from None
        self.name = f"lexicon-v{self.version}"
        self.categories: dict[str, re.Pattern[str]] = {
            category: _compile(where, category, patterns, macros)
            for category, patterns in categories.items()
        }

    def check(self, texts: Sequence[str]) -> list[str | None]:
        return [self._category(text) for text in texts]

    def _category(self, text: str) -> str | None:
        text = _WHITESPACE.sub(" ", text.replace("\u2019", "'"))
        for category, pattern in self.categories.items():
            if pattern.search(text):
                return category
        return None


def _compile(where: str, category: str, patterns: list[str], macros: dict[str, str]) -> re.Pattern:
    """One case-insensitive regex matching any of ``patterns``, macros expanded."""

    def expand(match: re.Match) -> str:
        if match.group(1) not in macros:
            raise ConfigError(f"{where}: category {category!r} uses unknown macro {match.group(0)}")
        return macros[match.group(1)]

    expanded = []
    for pattern in patterns:
        source = _MACRO.sub(expand, pattern)
        try:
            re.compile(source, re.IGNORECASE)
        except re.error as error:
            raise ConfigError(
                f"{where}: category {category!r}: invalid pattern {pattern[:80]!r}: {error}"
            ) from None
        expanded.append(f"(?:{source})")
    return re.compile("|".join(expanded) or r"(?!)", re.IGNORECASE)


class OpenAIModerationChecker:
    """An OpenAI-compatible ``/moderations`` endpoint, ``batch_size`` texts a request.

    Connection errors, timeouts, 429 and 5xx answers are retried ``max_retries`` times
    with exponential backoff (honouring ``Retry-After``); any other HTTP error, or a
    server that still fails, raises :class:`UserError`. The API key is read from the
    environment variable ``api_key_env`` at each request and never stored or shown.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        *,
        timeout: float = 60.0,
        max_retries: int = 4,
        batch_size: int = 32,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch_size < 1 or max_retries < 0:
            raise ValueError("batch_size must be at least 1 and max_retries at least 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retries = 0  # how many requests were retried, over the checker's life
        self._sleep = sleep
        self.name = f"openai-moderation:{model}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/moderations"

    def check(self, texts: Sequence[str]) -> list[str | None]:
        import httpx

        verdicts: list[str | None] = []
        if not texts:
            return verdicts
        with httpx.Client(headers=bearer_headers(self.api_key_env), timeout=self.timeout) as client:
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                results = self._post(client, batch)
                verdicts.extend(_verdict(result) for result in results)
        return verdicts

    def _post(self, client, batch: list[str]) -> list[dict[str, Any]]:
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            asked: float | None = None
            try:
                response = client.post(self.url, json={"model": self.model, "input": batch})
            except httpx.TransportError as error:  # includes timeouts
                last = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return self._results(response, len(batch))
                last = f"HTTP {response.status_code}: {error_details(response)[0]}"
                if response.status_code not in _RETRY_STATUS:
                    raise UserError(
                        f"moderation request to {self.url} failed: {last}\n"
                        f"  fix: check queries.moderation_base_url, queries.moderation_model"
                        f" and the key in ${self.api_key_env}, or set queries.moderation=offline"
                    )
                asked = retry_after(response)
            if attempt == self.max_retries:
                break
            self.retries += 1
            self._sleep(self._delay(attempt, asked))
        raise UserError(
            f"moderation request to {self.url} failed after {self.max_retries + 1} attempts: {last}\n"
            "  fix: check that the server is up, or set queries.moderation=offline"
        )

    def _delay(self, attempt: int, asked: float | None) -> float:
        return backoff_delay(attempt, asked, base=self.backoff_base, ceiling=self.backoff_max, jitter=False)

    def _results(self, response, expected: int) -> list[dict[str, Any]]:
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            results = None
        if not isinstance(results, list) or len(results) != expected:
            raise UserError(
                f"moderation answer from {self.url} is not a list of {expected} results: "
                f"{response.text[:200]!r}"
            )
        return results


def _verdict(result: dict[str, Any]) -> str | None:
    """None for an unflagged result; else its highest-scoring flagged category."""
    if not isinstance(result, dict) or not result.get("flagged"):
        return None
    flagged = [name for name, on in (result.get("categories") or {}).items() if on]
    if not flagged:
        return FLAGGED
    scores = result.get("category_scores") or {}
    return max(flagged, key=lambda name: float(scores.get(name) or 0.0))  # ties: first listed


_CHECKERS: dict[str, Callable[[QueriesConfig], HarmChecker]] = {
    "offline": lambda config: LexiconHarmChecker(),
    "openai": lambda config: OpenAIModerationChecker(
        config.moderation_base_url, config.moderation_model, config.moderation_api_key_env
    ),
}


def make_harm_checker(config: QueriesConfig) -> HarmChecker | None:
    """The checker ``config.moderation`` names, or None when it is ``"off"``."""
    if config.moderation == "off":
        return None
    return _CHECKERS[config.moderation](config)
