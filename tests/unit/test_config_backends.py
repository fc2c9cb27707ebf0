"""Configuration: one model per LLM backend, and which fields make the fingerprint that guards a resume."""

from __future__ import annotations

import json
import sys

import pydantic
import pytest

from fineinstructions.config import (
    LLM_BACKENDS,
    Config,
    LlamaCppConfig,
    LLMConfig,
    OpenAIConfig,
    TransformersConfig,
    VLLMConfig,
    load_config,
    output_fingerprint,
)
from fineinstructions.errors import ConfigError

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass


# ---------------------------------------------------------------- one model per LLM backend


def test_each_backend_has_its_own_model():
    assert isinstance(load_config("embedded").instantiate.llm, LlamaCppConfig)
    assert isinstance(load_config("paper").instantiate.llm, VLLMConfig)
    assert set(LLM_BACKENDS) == {"llama_cpp", "openai", "vllm", "transformers", "fake"}
    for name, model in LLM_BACKENDS.items():
        assert {"backend", "model", "cache", "n_ctx"} <= set(model.model_fields), name
        assert model().backend == name
        for field_name, field in model.model_fields.items():
            assert field.description, f"{name}.{field_name} is not documented"


def test_the_openai_backend_takes_a_tokenizer():
    config = load_config(overrides=["instantiate.llm.backend=openai"])
    assert config.instantiate.llm.tokenizer is None
    config = load_config(overrides=["instantiate.llm.backend=openai", "instantiate.llm.tokenizer=meta-llama/Llama-3.1-8B"])
    assert config.instantiate.llm.tokenizer == "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize("preset", ["embedded", "paper"])
def test_set_switches_the_backend_of_a_preset(preset):
    before = load_config(preset).instantiate.llm
    llm = load_config(preset, overrides=["instantiate.llm.backend=openai"]).instantiate.llm
    assert isinstance(llm, OpenAIConfig)
    assert (llm.model, llm.cache, llm.n_ctx) == (before.model, before.cache, before.n_ctx)
    assert llm.base_url == "http://127.0.0.1:8000/v1"


def test_switching_backend_drops_the_fields_only_the_old_one_has(tmp_path):
    path = tmp_path / "served.toml"
    path.write_text(
        '[judge.llm]\nbackend = "openai"\nmodel = "judge"\nbase_url = "http://gpu:9000/v1"\n'
        'max_concurrency = 4\ntokenizer = "gpt2"\nn_ctx = 8192\n'
    )
    llm = load_config("paper", files=[path], overrides=["judge.llm.backend=vllm"]).judge.llm
    assert llm == VLLMConfig(model="judge", n_ctx=8192)
    llm = load_config("paper", files=[path], overrides=["judge.llm.backend=transformers", "judge.llm.batch_size=2"]).judge.llm
    assert llm == TransformersConfig(model="judge", n_ctx=8192, batch_size=2)


@pytest.mark.parametrize(
    "overrides",
    [
        ["instantiate.llm.base_url=http://gpu:9000/v1", "instantiate.llm.backend=openai"],
        ["instantiate.llm.backend=openai", "instantiate.llm.base_url=http://gpu:9000/v1"],
        ["instantiate.llm={backend: openai, base_url: 'http://gpu:9000/v1'}"],
    ],
)
def test_switching_backend_keeps_the_fields_given_for_the_new_one(overrides):
    llm = load_config("paper", overrides=overrides).instantiate.llm
    assert isinstance(llm, OpenAIConfig)
    assert llm.base_url == "http://gpu:9000/v1"
    assert llm.model == "fineinstructions/template_instantiator"


def test_a_file_switching_backend_keeps_its_own_fields(tmp_path):
    path = tmp_path / "served.yaml"
    path.write_text("instantiate:\n  llm:\n    backend: openai\n    base_url: http://gpu:9000/v1\n    dialect: vllm\n")
    llm = load_config("paper", files=[path]).instantiate.llm
    assert (llm.backend, llm.base_url, llm.dialect) == ("openai", "http://gpu:9000/v1", "vllm")


def test_a_field_of_another_backend_says_which_backend_has_it():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=["instantiate.llm.base_url=http://gpu:9000/v1"])
    message = str(caught.value)
    assert "instantiate.llm.base_url: unknown field for the llama_cpp backend" in message
    assert "base_url is a field of the openai backend" in message
    assert "instantiate.llm.backend=openai" in message


def test_a_misspelt_backend_field_suggests_the_nearest():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=["judge.llm.backend=openai", "judge.llm.max_concurency=4"])
    assert "judge.llm.max_concurency: unknown field (did you mean 'max_concurrency'?)" in str(caught.value)


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=["judge.llm.backend=vlm"])
    message = str(caught.value)
    assert "judge.llm.backend: unknown backend 'vlm' (did you mean 'vllm'?" in message
    assert "llama_cpp, openai, vllm, transformers, fake" in message


def test_the_backend_defaults_to_llama_cpp():
    assert load_config(preset=None, overrides=["judge.llm.model=x"]).judge.llm == LlamaCppConfig(model="x")
    assert Config.model_validate({"judge": {"llm": {"model": "x"}}}).judge.llm == LlamaCppConfig(model="x")


def test_llm_config_builds_the_model_of_its_backend():
    built = LLMConfig(backend="openai", model="served", tokenizer="gpt2")
    assert type(built) is OpenAIConfig and built == OpenAIConfig(model="served", tokenizer="gpt2")
    assert isinstance(built, LLMConfig)
    assert LLMConfig(model="x") == LlamaCppConfig(model="x")
    with pytest.raises(pydantic.ValidationError):
        LLMConfig(backend="vllm", base_url="http://gpu:9000/v1")
    with pytest.raises(pydantic.ValidationError):
        LLMConfig(backend="vlm")
    with pytest.raises(pydantic.ValidationError):
        OpenAIConfig(backend="vllm")


def test_llm_configs_copy_and_pickle():
    import pickle

    config = LLMConfig(backend="openai", model="served", timeout=5)
    assert pickle.loads(pickle.dumps(config)) == config
    assert config.model_copy(update={"model": "other"}) == OpenAIConfig(model="other", timeout=5)
    assert load_config("paper").instantiate.llm.model_copy() == load_config("paper").instantiate.llm


# ---------------------------------------------------------------- what changes output rows


# Fields that change how fast, where or how reliably a run goes, never its rows: a run
# may be resumed with other values. Everything under [ray] is of this kind too.
RUN_SETTINGS = {
    "timeout", "max_concurrency", "max_retries", "base_url", "api_key_env", "cache", "shard_size",
    "batch_size", "rows_per_shard", "device", "moderation_base_url", "moderation_api_key_env",
}


def leaf_fields(model: type[pydantic.BaseModel], prefix: str = ""):
    """(dotted path, field) of every leaf field, through every LLM backend's model."""
    for name, field in model.model_fields.items():
        nested = [m for m in LLM_BACKENDS.values()] if name == "llm" else []
        if isinstance(field.annotation, type) and issubclass(field.annotation, pydantic.BaseModel):
            nested = [field.annotation]
        if nested:
            for inner in nested:
                yield from leaf_fields(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_every_field_is_marked_unless_it_is_a_run_setting():
    paths = list(leaf_fields(Config))
    assert len(paths) > 80
    for path, field in paths:
        affects = bool((field.json_schema_extra or {}).get("affects_output"))
        run_setting = path.startswith("ray.") or path.rsplit(".", 1)[-1] in RUN_SETTINGS
        assert affects != run_setting, path


@pytest.mark.parametrize(
    "override",
    [
        "instantiate.llm.timeout=5",
        "instantiate.llm.max_concurrency=2",
        "instantiate.llm.max_retries=0",
        "instantiate.llm.base_url=http://other:1/v1",
        "instantiate.llm.api_key_env=OTHER",
        "instantiate.llm.cache=false",
        "instantiate.shard_size=4",
        "templatize.batch_size=2",
        "output.rows_per_shard=10",
        "embed.device=cuda",
        "ray.instantiate.actors=8",
    ],
)
def test_run_settings_leave_the_fingerprint_alone(override):
    base = ["instantiate.llm.backend=openai"]
    assert output_fingerprint(load_config(overrides=[*base, override])) == output_fingerprint(load_config(overrides=base))


@pytest.mark.parametrize(
    "override",
    [
        "instantiate.llm.model=other",
        "instantiate.llm.backend=vllm",
        "instantiate.llm.n_ctx=8192",
        "instantiate.llm.tokenizer=gpt2",
        "instantiate.prompt=mine.toml",
        "instantiate.constraint=none",
        "instantiate.max_excerpts=2",
        "templatize.prompt=other.toml",
        "match.threshold=0.7",
        "judge.min_score=3.5",
        "judge.min_relevance=0.2",
        "judge.score=argmax",
        "instantiate.region_window=0.3",
        "instantiate.relevance=false",
        "pack.tokenizer=gpt2",
        "embed.model=other",
        "index.kind=hnsw",
        "input.documents.text_field=body",
        "input.on_error=skip",
        "output.format=jsonl",
    ],
)
def test_what_changes_rows_changes_the_fingerprint(override):
    base = ["instantiate.llm.backend=openai"]
    assert output_fingerprint(load_config(overrides=[*base, override])) != output_fingerprint(load_config(overrides=base))


def test_the_fingerprint_holds_only_marked_values():
    config = load_config("embedded")
    fingerprint = output_fingerprint(config.instantiate)
    assert fingerprint["llm"] == {"backend": "llama_cpp", "model": "embedded", "n_ctx": 4096}
    assert fingerprint["max_excerpts"] == 1 and "shard_size" not in fingerprint
    whole = output_fingerprint(config)
    assert "ray" not in whole and whole["instantiate"] == fingerprint
    assert json.loads(json.dumps(whole)) == whole  # plain JSON values
