"""Silver data with the real embedded model as the teacher (SmolLM2-135M through llama.cpp)
on real queries and documents from ../shared/data: what the small teacher gets wrong is
dropped by the pipeline's validation, and every example kept passes it again."""

import json

import pytest

from fineinstructions.config import load_config
from fineinstructions.experiments.silver import null_count, read_silver
from fineinstructions.interface.distill import distill_instantiator, distill_templatizer
from fineinstructions.stages.instantiate import released_user_turn
from fineinstructions.text.excerpt import expand_excerpts
from fineinstructions.text.genericity import template_problems
from support.data import write_slice

pytestmark = pytest.mark.slow

QUIET = dict(show_progress=False, log=lambda message: None)


def test_the_embedded_teacher_makes_silver_data_that_passes_validation_again(tmp_path):
    write_slice(tmp_path, documents=2)
    config = load_config(overrides=["match.threshold=-1", "instantiate.relevance=false"])
    templatizer = distill_templatizer([tmp_path / "queries.jsonl"], tmp_path / "silver-t", config, **QUIET)
    examples = read_silver(tmp_path / "silver-t", "templatizer")
    assert len(examples) > 6 and templatizer["rows"] == len(examples)  # more templates than a document's 6 matches
    outputs = templatizer["teacher_outputs"]
    assert outputs["in"] == outputs["valid"] + sum(outputs["failed"].values())
    assert templatizer["validation_pass_rate"] == round(outputs["valid"] / outputs["in"], 4)
    for example in examples:
        query, target = example["messages"][0]["content"], json.loads(example["messages"][1]["content"])
        assert template_problems(target["template"], target["compatible_document_description"], query) == []
        assert example["teacher"].startswith("llama_cpp:")

    instantiator = distill_instantiator([tmp_path / "documents.jsonl"], [tmp_path / "silver-t" / "work" / "templates"],
                                        tmp_path / "silver-i", config, **QUIET)
    outputs = instantiator["teacher_outputs"]
    assert outputs["in"] == outputs["valid"] + sum(outputs["skipped"].values()) + sum(outputs["failed"].values())
    rows = read_silver(tmp_path / "silver-i", "instantiator") if instantiator["rows"] else []
    pairs = [row for row in rows if row["target"] == "pair"]
    assert len(pairs) == outputs["valid"] - instantiator["dropped"].get("not_compactable", 0)
    assert len(rows) - len(pairs) == null_count(len(pairs), 0.05) == instantiator["null_rows_wanted"]
    for row in pairs:
        user = json.loads(row["messages"][0]["content"])
        assert row["messages"][0]["content"] == released_user_turn(user["document"], user["instruction_template"])
        target = json.loads(row["messages"][1]["content"])
        expansion = expand_excerpts(target["answer"], user["document"])
        assert expansion.ok and expansion.excerpt_ratio >= 0.8 and "<fi>" not in target["instruction"]
