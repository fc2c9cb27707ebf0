from types import SimpleNamespace

from fineinstructions.config import LLMConfig, load_config
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.factory import make_llm
from fineinstructions.models.llama_cpp_backend import LlamaCppLLM
from fineinstructions.models.llm import capabilities
from fineinstructions.models.openai_backend import OpenAICompatibleLLM


def test_the_embedded_preset_builds_a_cached_llama_cpp_backend(tmp_path):
    config = load_config("embedded")
    llm = make_llm(config.instantiate.llm, cache_path=tmp_path / "cache.sqlite")
    assert isinstance(llm, CachedLLM) and isinstance(llm.backend, LlamaCppLLM)
    assert llm.backend.model == "embedded"
    assert (tmp_path / "cache.sqlite").is_file()


def test_openai_settings_reach_the_backend():
    config = LLMConfig(
        backend="openai", model="served", base_url="http://10.0.0.5:9000/v1/", dialect="vllm",
        max_concurrency=3, api_key_env="MY_KEY", cache=False,
    )
    llm = make_llm(config)
    assert isinstance(llm, OpenAICompatibleLLM)
    assert (llm.base_url, llm.dialect, llm.max_concurrency, llm.api_key_env) == (
        "http://10.0.0.5:9000/v1", "vllm", 3, "MY_KEY",
    )
    assert llm.tokenizer is None and llm.token_count_method.startswith("the server's tokenize endpoint")
    assert capabilities(llm).constrains_regex and not capabilities(llm).constrains_gbnf


def test_an_openai_tokenizer_reaches_the_backend():
    # The openai backend's config gains a ``tokenizer`` field; built here field by field
    # so the test does not depend on how the config classes are arranged.
    base = LLMConfig(backend="openai", model="served", cache=False)
    config = SimpleNamespace(**{**base.model_dump(), "tokenizer": "/models/tok"})
    llm = make_llm(config)
    assert llm.tokenizer == "/models/tok" and llm.token_count_method == "tokenizer /models/tok"
    assert capabilities(llm).counts_tokens_locally
    assert make_llm(base).tokenizer is None


def test_without_a_cache_path_there_is_no_cache():
    assert isinstance(make_llm(LLMConfig(backend="fake", model="x")), object)
    assert not isinstance(make_llm(LLMConfig(backend="fake", model="x")), CachedLLM)
