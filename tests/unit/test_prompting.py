"""Prompts are versioned data files."""

import pytest

from fineinstructions.errors import ConfigError
from fineinstructions.text.prompting import load_prompt, packaged_prompts


def test_packaged_templatize_prompt_loads_with_version_and_examples():
    assert "templatize-v1" in packaged_prompts()
    prompt = load_prompt("templatize-v1")
    assert prompt.version == "templatize-v1"
    assert "<fi>" in prompt.system
    assert prompt.require("query", "template", "compatible_document_description") is prompt


def test_a_user_prompt_file_works_and_bad_ones_say_what_is_wrong(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('version = "mine-2"\nsystem = "Be generic."\n[[examples]]\nquery = "q"\ntemplate = "<fi>t</fi>"\n')
    prompt = load_prompt(good)
    assert (prompt.version, prompt.system, prompt.examples) == ("mine-2", "Be generic.", ({"query": "q", "template": "<fi>t</fi>"},))
    with pytest.raises(ConfigError, match="example 1 lacks compatible_document_description"):
        prompt.require("query", "template", "compatible_document_description")
    no_version = tmp_path / "bad.toml"
    no_version.write_text('system = "x"\n')
    with pytest.raises(ConfigError, match="version"):
        load_prompt(no_version)
    broken = tmp_path / "broken.toml"
    broken.write_text("version = \n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_prompt(broken)
    with pytest.raises(ConfigError, match="templatize-v1"):
        load_prompt("no-such-prompt")
