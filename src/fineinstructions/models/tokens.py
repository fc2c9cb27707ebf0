"""Token counting behind one small interface.

Packing compares pair lengths with document lengths, so both must be counted with the
same tokenizer. Choose it by a spec string:

- ``"embedded"``: the embedded LLM's own tokenizer (read from its GGUF file, so nothing
  is downloaded);
- a path ending in ``.gguf``: that model's tokenizer, through llama.cpp;
- anything else: a Hugging Face tokenizer name or local folder (``tokenizers`` or
  ``transformers`` must be installed; a name is fetched from the hub only if it is not
  in the local cache).

Counts never include special tokens such as BOS, so a text's count does not depend on
where it ends up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from fineinstructions.errors import MissingDependencyError, UserError


class TokenCounter(Protocol):
    """Counts tokens of texts. ``name`` identifies the tokenizer in provenance. The
    counters here also ``encode`` texts to ids, ``decode`` ids and name their
    ``eos_token_id`` (what ``export`` writes token shards with)."""

    name: str

    def count(self, texts: Sequence[str]) -> list[int]: ...


class LlamaCppTokenCounter:
    """The tokenizer stored in a GGUF file, loaded vocabulary-only (no weights)."""

    def __init__(self, model_path: str | Path, *, name: str | None = None) -> None:
        self.model_path = Path(model_path)
        self.name = name or self.model_path.stem
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                import llama_cpp
            except ImportError:
                raise MissingDependencyError(
                    "llama-cpp-python", "embedded", "counting tokens with a GGUF tokenizer"
                ) from None
            if not self.model_path.is_file():
                raise UserError(f"tokenizer model {self.model_path} does not exist")
            # The model object alone, vocabulary only: no weights and no context, so no
            # KV-cache memory and none of the context warnings llama.cpp prints.
            from llama_cpp._internals import LlamaModel

            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            self._model = LlamaModel(path_model=str(self.model_path), params=params, verbose=False)
        return self._model

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode(texts)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        model = self._load()
        return [list(model.tokenize(text.encode("utf-8"), False, False)) if text else [] for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        model = self._load()
        return model.detokenize([int(i) for i in ids], special=False).decode("utf-8", errors="replace")

    @property
    def eos_token_id(self) -> int:
        return int(self._load().token_eos())

    @property
    def vocab_size(self) -> int:
        return int(self._load().n_vocab())


class HuggingFaceTokenCounter:
    """A Hugging Face tokenizer, by hub name or local folder."""

    def __init__(self, name_or_path: str) -> None:
        self.name = name_or_path
        self._tokenizer = None

    def _load(self):
        if self._tokenizer is None:
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise MissingDependencyError(
                    "transformers", "transformers", f"the tokenizer {self.name!r}"
                ) from None
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.name)
            except OSError as error:
                raise UserError(f"cannot load the tokenizer {self.name!r}: {error}") from None
        return self._tokenizer

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode(texts)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        return [list(ids) for ids in self._load()(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self._load().decode(list(ids))

    @property
    def eos_token_id(self) -> int:
        eos = self._load().eos_token_id
        if eos is None:
            raise UserError(f"the tokenizer {self.name!r} has no end-of-sequence token to separate documents with")
        return int(eos)

    @property
    def vocab_size(self) -> int:
        return len(self._load())


def load_token_counter(spec: str) -> TokenCounter:
    """The token counter a spec names (see the module doc)."""
    if spec == "embedded":
        from fineinstructions.models.embedded import EMBEDDED_LLM_NAME, embedded_llm_path

        return LlamaCppTokenCounter(embedded_llm_path(), name=EMBEDDED_LLM_NAME)
    if spec.lower().endswith(".gguf"):
        return LlamaCppTokenCounter(spec)
    return HuggingFaceTokenCounter(spec)
