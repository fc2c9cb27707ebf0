from fineinstructions.config import LLMConfig, load_config
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.factory import make_llm
from fineinstructions.models.llama_cpp_backend import LlamaCppLLM
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


def test_without_a_cache_path_there_is_no_cache():
    assert isinstance(make_llm(LLMConfig(backend="fake", model="x")), object)
    assert not isinstance(make_llm(LLMConfig(backend="fake", model="x")), CachedLLM)
