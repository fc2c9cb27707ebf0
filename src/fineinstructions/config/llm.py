"""Which LLM a stage uses: one config model per backend, told apart by ``backend``.

Every backend has ``backend``, ``model``, ``cache`` and ``n_ctx``; the others are its
own. A later layer of configuration that changes ``backend`` (a file, ``--set
judge.llm.backend=openai``) drops the fields only the old backend has, so a preset's
settings never block a switch; the fields given with the new backend are kept, and a
field the new backend lacks is an error that names the backend having it.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import Discriminator, Field, Tag, TypeAdapter

from fineinstructions.config.base import AFFECTS_OUTPUT, Section

DEFAULT_BACKEND = "llama_cpp"

_BACKEND = (
    "llama_cpp (embedded default), openai (any OpenAI-compatible server), vllm (in this "
    "process), transformers, or fake (scripted replies, for tests)."
)


def _backend(name: str) -> Any:
    return Field(name, description=_BACKEND, json_schema_extra=AFFECTS_OUTPUT)


class LLMConfig(Section):
    """The settings of one LLM: the fields every backend has (and everyone reads).

    Each backend's model is a subclass; a config section's ``llm`` is
    :data:`AnyLLMConfig`, whichever one ``backend`` names. Like :class:`pathlib.Path`,
    calling this class builds the subclass: ``LLMConfig(backend="openai", model="served")``
    is an :class:`OpenAIConfig` (llama_cpp when no backend is named).
    """

    backend: str = _backend(DEFAULT_BACKEND)
    model: str = Field(
        "embedded",
        description="'embedded', a GGUF path, a hub id or local folder, or a served model name.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    cache: bool = Field(True, description="Keep a request cache next to the run's output, so re-runs make no repeated calls.")
    n_ctx: int = Field(
        4096,
        ge=256,
        description="Context window in tokens (vLLM's max_model_len; for a server, its window): long documents are cut to fit.",
        json_schema_extra=AFFECTS_OUTPUT,
    )

    def __new__(cls, /, **fields: Any) -> LLMConfig:
        if cls is LLMConfig:
            # The backend's model, validated; Python then runs its __init__ with the same
            # fields, which validates them once more to the same values.
            return _adapter().validate_python(fields)
        return super().__new__(cls)


class LlamaCppConfig(LLMConfig):
    """llama.cpp in this process: a GGUF file, or the embedded SmolLM2."""

    backend: Literal["llama_cpp"] = _backend("llama_cpp")


class OpenAIConfig(LLMConfig):
    """Any OpenAI-compatible HTTP server: vLLM, SGLang, TGI, llama.cpp's server, hosted APIs."""

    backend: Literal["openai"] = _backend("openai")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="The server's base URL.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the API key (None: send none).")
    dialect: Literal["openai", "vllm", "vllm_legacy", "llama_cpp"] = Field(
        "openai", description="How structured output is sent (see the backend's docs).", json_schema_extra=AFFECTS_OUTPUT
    )
    tokenizer: str | None = Field(
        None,
        description="A Hugging Face tokenizer name or path used to count prompt tokens; None: the server's tokenize endpoint, or a conservative character estimate.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    max_concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(6, ge=0, description="Retries on connection errors, 429 and 5xx.")
    timeout: float = Field(300.0, gt=0, description="Seconds before a request times out.")


class VLLMConfig(LLMConfig):
    """vLLM's engine in this process (one per GPU worker on Ray)."""

    backend: Literal["vllm"] = _backend("vllm")


class TransformersConfig(LLMConfig):
    """Hugging Face transformers in this process."""

    backend: Literal["transformers"] = _backend("transformers")
    batch_size: int = Field(8, ge=1, description="Sequences generated together.")


class FakeConfig(LLMConfig):
    """The scripted fake backend of the tests."""

    backend: Literal["fake"] = _backend("fake")


LLM_BACKENDS: dict[str, type[LLMConfig]] = {
    "llama_cpp": LlamaCppConfig,
    "openai": OpenAIConfig,
    "vllm": VLLMConfig,
    "transformers": TransformersConfig,
    "fake": FakeConfig,
}


def _backend_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("backend", DEFAULT_BACKEND)
    return getattr(value, "backend", None)


AnyLLMConfig = Annotated[
    Union[
        Annotated[LlamaCppConfig, Tag("llama_cpp")],
        Annotated[OpenAIConfig, Tag("openai")],
        Annotated[VLLMConfig, Tag("vllm")],
        Annotated[TransformersConfig, Tag("transformers")],
        Annotated[FakeConfig, Tag("fake")],
    ],
    Discriminator(_backend_of),
]
"""A field holding an LLM's settings: the model of the backend ``backend`` names
(llama_cpp when it names none)."""


@cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(AnyLLMConfig)


def merge_llm_settings(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base`` (raw LLM settings of two config layers); when
    ``update`` changes the backend, ``base``'s fields that only the old backend has are
    dropped."""
    old = base.get("backend", DEFAULT_BACKEND)
    new = update.get("backend", old)
    kept = dict(base)
    if new != old and isinstance(old, str) and isinstance(new, str) and {old, new} <= set(LLM_BACKENDS):
        own = set(LLM_BACKENDS[old].model_fields) - set(LLM_BACKENDS[new].model_fields)
        kept = {name: value for name, value in base.items() if name not in own}
    return {**kept, **update}
