"""Configuration: presets, config files, --set overrides and their validation."""

from __future__ import annotations

import sys

import pydantic
import pytest

from fineinstructions.config import (
    Config,
    config_as_toml,
    load_config,
    parse_override,
    preset_names,
    read_config_file,
)
from fineinstructions.errors import ConfigError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def test_preset_names():
    assert preset_names() == ["embedded", "paper"]


def test_embedded_preset():
    config = load_config("embedded")
    assert isinstance(config, Config)
    assert config == load_config()  # the default preset
    assert config.templatize.mode == "prompted"
    assert config.templatize.llm.backend == "llama_cpp"
    assert config.templatize.llm.model == "embedded"
    assert config.instantiate.llm.model == "embedded"
    assert config.judge.llm.model == "embedded"
    assert config.embed.model == "embedded"
    assert config.match.threshold is None  # the embedder's calibrated value
    assert config.judge.min_score == 4
    assert config.instantiate.min_excerpt_ratio == 0.8
    assert config.pack.tokenizer == "embedded"
    assert config.pack.seed == 0
    assert config.input.text_field == "text" and config.input.on_error == "raise"
    assert config.output.format == "parquet"


def test_paper_preset():
    config = load_config("paper")
    assert config.match.threshold == 0.865
    assert config.judge.min_score == 4
    assert config.templatize.mode == "fineinstructions"
    assert config.templatize.llm.backend == "vllm"
    assert config.templatize.llm.model == "fineinstructions/query_templatizer"
    assert config.embed.model == "fineinstructions/instruction_template_retrieval_embedding"
    assert (config.embed.num_chunks, config.embed.sigma, config.embed.alpha) == (5, 0.05, 1.0)
    assert config.instantiate.mode == "fineinstructions"
    assert config.instantiate.llm.model == "fineinstructions/template_instantiator"
    assert config.instantiate.min_excerpt_ratio == 0.8
    assert config.judge.llm.backend == "vllm"
    assert config.judge.llm.model == "flowaicom/Flow-Judge-v0.1"
    assert config.pack.tokenizer == "meta-llama/Meta-Llama-3-8B"


def test_no_preset_gives_defaults():
    assert load_config(preset=None) == Config()


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError) as caught:
        load_config("papr")
    message = str(caught.value)
    assert "'papr'" in message and "embedded" in message and "paper" in message
    assert isinstance(caught.value, UserError)


def test_toml_file_overrides_the_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[match]\nthreshold = 0.7\n\n[judge.llm]\nmodel = "my/judge"\n\n[pack]\nseed = 3\n')
    config = load_config("paper", files=[path])
    assert config.match.threshold == 0.7
    assert config.judge.llm.model == "my/judge"
    assert config.judge.llm.backend == "vllm"  # merged, not replaced
    assert config.pack.seed == 3
    assert config.pack.tokenizer == "meta-llama/Meta-Llama-3-8B"  # untouched


def test_yaml_file_overrides_the_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("embed:\n  num_chunks: 8\ninput:\n  text_field: body\n  on_error: skip\n")
    config = load_config("embedded", files=[path])
    assert config.embed.num_chunks == 8
    assert config.embed.sigma == 0.05
    assert config.input.text_field == "body" and config.input.on_error == "skip"
    yml = tmp_path / "other.yml"
    yml.write_text("output:\n  format: jsonl\n")
    assert load_config(files=[yml]).output.format == "jsonl"


def test_later_files_win(tmp_path):
    first = tmp_path / "a.toml"
    first.write_text("[pack]\nseed = 1\n[judge]\nmin_score = 3\n")
    second = tmp_path / "b.yaml"
    second.write_text("pack:\n  seed: 2\n")
    config = load_config(files=[first, second])
    assert (config.pack.seed, config.judge.min_score) == (2, 3)


def test_overrides_win_over_files(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[pack]\nseed = 3\n")
    config = load_config("paper", files=[path], overrides=["pack.seed=7", "match.threshold=0.9"])
    assert config.pack.seed == 7
    assert config.match.threshold == 0.9
    assert load_config(overrides=["pack.seed=7", "pack.seed=8"]).pack.seed == 8


def test_override_values_are_typed():
    config = load_config(
        overrides=[
            "templatize.llm.model=some/model",
            "input.text_field=body",
            "embed.alpha=0.5",
            "match.threshold=null",
        ],
        preset="paper",
    )
    assert config.templatize.llm.model == "some/model"
    assert config.input.text_field == "body"
    assert config.embed.alpha == 0.5
    assert config.match.threshold is None


def test_parse_override():
    assert parse_override("match.threshold=0.8") == {"match": {"threshold": 0.8}}
    assert parse_override("a.b.c=x=y") == {"a": {"b": {"c": "x=y"}}}
    assert parse_override("pack.tokenizer=") == {"pack": {"tokenizer": ""}}
    for bad in ("match.threshold", "=3"):
        with pytest.raises(ConfigError, match="section.field=value"):
            parse_override(bad)


@pytest.mark.parametrize(
    "override, location, suggestion",
    [
        ("match.treshold=0.8", "match.treshold", "'threshold'"),
        ("mtach.threshold=0.8", "mtach", "'match'"),
        ("templatize.llm.modle=x", "templatize.llm.modle", "'model'"),
        ("pack.sed=1", "pack.sed", "'seed'"),
    ],
)
def test_unknown_key_suggests_the_nearest(override, location, suggestion):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    message = str(caught.value)
    assert f"{location}: unknown field (did you mean {suggestion}?)" in message


def test_unknown_key_without_a_close_match_lists_known_ones():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=["pack.zzzzzz=1"])
    assert "pack.zzzzzz: unknown field (known: tokenizer, seed)" in str(caught.value)


def test_unknown_key_in_a_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[judge]\nmin_scor = 3\n")
    with pytest.raises(ConfigError, match=r"judge\.min_scor: unknown field \(did you mean 'min_score'\?\)"):
        load_config(files=[path])


@pytest.mark.parametrize(
    "override, field",
    [
        ("pack.seed=seven", "pack.seed"),
        ("match.threshold=high", "match.threshold"),
        ("match.threshold=1.5", "match.threshold"),  # out of range
        ("judge.min_score=9", "judge.min_score"),
        ("output.format=csv", "output.format"),
        ("input.on_error=ignore", "input.on_error"),
        ("embed.num_chunks=[1, 2]", "embed.num_chunks"),
        ("judge.llm=big", "judge.llm"),
    ],
)
def test_wrong_type_names_the_field(override, field):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=[override])
    message = str(caught.value)
    assert message.startswith("invalid configuration:")
    assert f"\n  {field}: " in message


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=["pack.seed=x", "judge.min_score=0"])
    assert "pack.seed" in str(caught.value) and "judge.min_score" in str(caught.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(files=[tmp_path / "missing.toml"])
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[pack\nseed = 1\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(bad_toml)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("pack: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(bad_yaml)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_config_file(not_mapping)
    wrong_suffix = tmp_path / "config.json"
    wrong_suffix.write_text("{}")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml or \.yml"):
        read_config_file(wrong_suffix)
    empty_yaml = tmp_path / "empty.yaml"
    empty_yaml.write_text("")
    assert read_config_file(empty_yaml) == {}


def test_config_is_frozen():
    config = load_config("paper")
    with pytest.raises(pydantic.ValidationError):
        config.pack = None
    with pytest.raises(pydantic.ValidationError):
        config.match.threshold = 0.1
    with pytest.raises(pydantic.ValidationError):
        config.judge.llm.model = "other"
    assert config.match.threshold == 0.865
    hash(config)  # frozen models are hashable


def test_field_mapping_from_config():
    config = load_config(overrides=["input.text_field=body", "input.id_field=uid"])
    mapping = config.input.field_mapping()
    assert (mapping.text, mapping.id, mapping.source, mapping.messages) == ("body", "uid", "source", "messages")


@pytest.mark.parametrize("preset", ["embedded", "paper"])
def test_config_as_toml_round_trips(tmp_path, preset):
    config = load_config(preset, overrides=["input.text_field=body"])
    text = config_as_toml(config)
    tomllib.loads(text)  # valid TOML
    path = tmp_path / "dumped.toml"
    path.write_text(text)
    assert load_config(preset=None, files=[path]) == config
