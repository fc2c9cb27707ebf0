"""Configuration: presets, config files, --set overrides and their validation."""

from __future__ import annotations

import sys

import pydantic
import pytest

from fineinstructions.config import (
    Config,
    DocumentFields,
    InputConfig,
    config_as_toml,
    load_config,
    parse_override,
    preset_names,
    read_config_file,
)
from fineinstructions.errors import ConfigError, UserError
from fineinstructions.io.readers import FieldMapping

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
    # Calibrated on the rated set for the 135M judge's expected score and MiniLM's relevance.
    assert (config.judge.score, config.judge.min_score, config.judge.min_relevance) == ("expected", 3.0, 0.45)
    assert config.instantiate.relevance and config.instantiate.region_window == 0.15
    assert config.instantiate.min_excerpt_ratio == 0.8
    assert config.pack.tokenizer == "embedded"
    assert config.pack.seed == 0
    assert config.input.queries.text_field == "text" and config.input.documents.text_field == "text"
    assert config.input.on_error == "raise"
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
    assert config.input.queries.text_field == config.input.documents.text_field == "body"
    assert config.input.on_error == "skip"
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
    assert config.input.documents.text_field == "body"
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
    with pytest.raises(ConfigError, match=r"judge\.min_scor \(in .*c\.toml\): unknown field \(did you mean 'min_score'\?\)"):
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


@pytest.mark.parametrize("preset", ["embedded", "paper"])
def test_config_as_toml_round_trips(tmp_path, preset):
    config = load_config(preset, overrides=["input.text_field=body"])
    text = config_as_toml(config)
    tomllib.loads(text)  # valid TOML
    path = tmp_path / "dumped.toml"
    path.write_text(text)
    assert load_config(preset=None, files=[path]) == config


# ---------------------------------------------------------------- input fields per kind


def test_queries_and_documents_have_their_own_fields():
    config = load_config(
        overrides=["input.queries.text_field=prompt", "input.documents.text_field=content", "input.documents.id_field=url"]
    )
    assert config.input.query_fields() == FieldMapping(text="prompt", id="id", source="source", messages="messages")
    assert config.input.document_fields() == FieldMapping(text="content", id="url", source="source")


def test_the_old_input_field_names_set_both_kinds():
    config = load_config(
        overrides=["input.text_field=body", "input.id_field=uid", "input.source_field=site", "input.messages_field=chat"]
    )
    assert config.input.query_fields() == FieldMapping(text="body", id="uid", source="site", messages="chat")
    assert config.input.document_fields() == FieldMapping(text="body", id="uid", source="site")


def test_a_later_layer_wins_whichever_name_it_uses(tmp_path):
    path = tmp_path / "fields.toml"
    path.write_text('[input.documents]\ntext_field = "content"\n')
    config = load_config(files=[path], overrides=["input.text_field=body"])
    assert (config.input.queries.text_field, config.input.documents.text_field) == ("body", "body")
    config = load_config(overrides=["input.text_field=body", "input.documents.text_field=content"])
    assert (config.input.queries.text_field, config.input.documents.text_field) == ("body", "content")


def test_within_one_file_the_specific_name_wins(tmp_path):
    path = tmp_path / "fields.toml"
    path.write_text('[input]\ntext_field = "body"\n\n[input.documents]\ntext_field = "content"\n')
    config = load_config(files=[path])
    assert (config.input.queries.text_field, config.input.documents.text_field) == ("body", "content")


def test_an_input_section_built_directly_takes_the_shorthands():
    section = InputConfig(text_field="body", documents={"text_field": "content"}, messages_field="chat")
    assert (section.queries.text_field, section.documents.text_field) == ("body", "content")
    assert section.queries.messages_field == "chat"
    assert InputConfig(text_field="body", documents=DocumentFields()).documents.text_field == "text"


def test_documents_have_no_messages_field():
    with pytest.raises(ConfigError, match=r"input\.documents\.messages_field: unknown field"):
        load_config(overrides=["input.documents.messages_field=chat"])


# ---------------------------------------------------------------- override values take their field's type


@pytest.mark.parametrize(
    "override, path, expected",
    [
        ("queries.moderation=off", "queries.moderation", "off"),  # a choice is text, not YAML's false
        ("templatize.prompt=yes", "templatize.prompt", "yes"),
        ("templatize.prompt=2024", "templatize.prompt", "2024"),
        ("templatize.llm.model=on", "templatize.llm.model", "on"),
        ("input.text_field=null", "input.queries.text_field", "null"),  # cannot be unset: a field name
        ("input.documents.text_field=true", "input.documents.text_field", "true"),
        ('input.text_field="yes"', "input.documents.text_field", "yes"),  # quotes are read as YAML's
        ("judge.prompt=null", "judge.prompt", None),  # may be unset: null unsets it
        ("judge.prompt='null'", "judge.prompt", "null"),
        ("embed.device=null", "embed.device", None),
        ("pack.tokenizer=", "pack.tokenizer", ""),
        ("queries.protected=evals.jsonl", "queries.protected", ("evals.jsonl",)),
        ("queries.protected=[a.jsonl, off]", "queries.protected", ("a.jsonl", "off")),
        ("queries.protected=[]", "queries.protected", ()),
        ("queries.exact_dedup=off", "queries.exact_dedup", False),
        ("queries.exact_dedup=true", "queries.exact_dedup", True),
        ("index.nlist=null", "index.nlist", None),
        ("index.nlist=12", "index.nlist", 12),
        ("match.threshold=0.7", "match.threshold", 0.7),
    ],
)
def test_override_values_take_the_type_of_their_field(override, path, expected):
    value = load_config(overrides=[override])
    for part in path.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


def test_yaml_files_read_off_and_no_as_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("queries:\n  moderation: off\n  exact_dedup: no\ntemplatize:\n  prompt: mine.toml\n")
    config = load_config(files=[path])
    assert config.queries.moderation == "off"
    assert config.queries.exact_dedup is False


def test_llm_override_values_take_the_type_of_the_backends_field():
    config = load_config(
        overrides=["judge.llm.backend=openai", "judge.llm.api_key_env=null", "judge.llm.tokenizer=yes", "judge.llm.timeout=12"]
    )
    assert config.judge.llm.api_key_env is None
    assert config.judge.llm.tokenizer == "yes"
    assert config.judge.llm.timeout == 12.0


def test_an_invalid_value_names_the_file_or_option_that_set_it(tmp_path):
    mine = tmp_path / "my.toml"
    mine.write_text('[match]\nthreshold = "high"\n\n[judge]\nthreshhold = 4\n')
    with pytest.raises(ConfigError) as caught:
        load_config("embedded", files=[mine], overrides=["match.seed=x"])
    message = str(caught.value)
    assert f"match.threshold (in {mine}): Input should be a valid number" in message
    assert f"judge.threshhold (in {mine}): unknown field" in message
    assert "match.seed: Input should be a valid integer" in message  # typed on this command line
