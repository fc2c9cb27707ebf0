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
    cls = backend_class(config.backend)
    if config.backend == "llama_cpp":
        backend = cls(config.model, n_ctx=config.n_ctx)
    elif config.backend == "openai":
        backend = cls(
            config.model,
            base_url=config.base_url,
            api_key_env=config.api_key_env,
            dialect=config.dialect,
            max_concurrency=config.max_concurrency,
            max_retries=config.max_retries,
            timeout=config.timeout,
            # A field of the openai backend's own config; absent from older configs.
            tokenizer=getattr(config, "tokenizer", None),
        )
    elif config.backend == "vllm":
        backend = cls(config.model, max_model_len=config.n_ctx)
    elif config.backend == "transformers":
        backend = cls(config.model, batch_size=config.batch_size)
    else:
        backend = cls(model=config.model)
    if config.cache and cache_path is not None:
        return CachedLLM(backend, cache_path, shared=shared_cache)
    return backend
