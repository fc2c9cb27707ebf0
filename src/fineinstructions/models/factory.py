"""Build the LLM a stage's config names, wrapped in the request cache."""

from __future__ import annotations

from pathlib import Path

from fineinstructions.config import LLMConfig
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.llm import LLM, backend_class


def check_llm(config: LLMConfig) -> None:
    """Fail now, with the fix, if the backend ``config`` names cannot run here (a
    llama.cpp build that crashes on this CPU, a missing model file); loads no model."""
    check = getattr(make_llm(config), "check", None)
    if check is not None:
        check()


def make_llm(
    config: LLMConfig, *, cache_path: str | Path | None = None, shared_cache: str | Path | None = None
) -> LLM:
    """The backend ``config`` names; with ``config.cache`` and a ``cache_path``, cached
    (``shared_cache``: a read-only cache also consulted, as a cluster worker does)."""
    backend = backend_class(config.backend).from_config(config)
    if config.cache and cache_path is not None:
        return CachedLLM(backend, cache_path, shared=shared_cache)
    return backend
