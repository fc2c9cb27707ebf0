"""Templatize with the real embedded model (SmolLM2-135M through llama.cpp) on real
queries from ../shared/data: the per-query grammar, the lazy grammar decoder, and the
whole job from query file to template bank."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fineinstructions.config import load_config
from fineinstructions.execution.templatize import beside, run_templatize
from fineinstructions.interface.cli import main
from fineinstructions.io import read_rows
from fineinstructions.models.llm import Request
from fineinstructions.records import TemplateRow
from fineinstructions.stages.templatize import Templatizer
from fineinstructions.text.genericity import template_problems
from fineinstructions.text.templatize_grammar import query_template_grammar, segments

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUERIES = DATA / "queries.jsonl"
KNOWN_REASONS = {
    "unclosed_tag", "stray_tag", "nested_tag", "empty_tag", "no_variables", "copy_of_query",
    "leftover_number", "leftover_quote", "leftover_name", "empty_description",
    "description_repeats_template", "description_copies_example", "invalid_output", "truncated",
    "context_overflow", "backend_error",
}


def real_slice(n: int, step: int) -> list[dict]:
    """Every ``step``-th real query (spread over all sources), ``n`` of them."""
    rows = [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines()]
    return rows[::step][:n]


def json_answer(template: str, description: str) -> str:
    return json.dumps({"template": template, "compatible_document_description": description})


def test_grammar_allows_templates_of_the_query_and_nothing_else(llm):
    grammar = query_template_grammar("How do I reset the password on my Netgear router?")
    decoder = llm._decoder
    good = "A support page for a device that explains how to reset its password."
    assert decoder.accepts(grammar, json_answer("How do I reset the password on my <fi>brand of device</fi> <fi>type of device</fi>?", good))
    assert decoder.accepts(grammar, json_answer("<fi>a question word</fi> do I reset the password on my Netgear router?", good))
    for template in (
        "How do I reset the password on my Netgear router?",  # no variable
        "How can I reset the password on my <fi>a device</fi>?",  # a word changed
        "How do I reset the password on my Netgear router<fi>a mark</fi>",  # a tag over punctuation
        "How do I reset the password on my <fi>a device</fi>? Thanks",  # words added
    ):
        assert not decoder.accepts(grammar, json_answer(template, good)), template
    assert not decoder.accepts(grammar, json_answer("How do I reset the password on my <fi>a device</fi>?", "No period at the end"))


def test_lazy_grammar_decoding_gives_the_same_tokens_as_full_grammar_sampling(llm):
    from llama_cpp import LlamaGrammar

    templatizer = Templatizer(llm, constraint="query")
    for row in real_slice(2, 700):
        request = templatizer.request(row["text"])
        # Both decode from a fresh KV cache: replaying a cached prefix in smaller batches
        # changes the logits in the last bits, which can flip a near-tie either way.
        llm.llama.reset()
        lazy = llm.generate([request])[0]
        llm.llama.reset()
        prompt, stops = llm.prompt(request)
        tokens = llm.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)  # as the backend does
        full = llm.llama.create_completion(
            tokens,
            max_tokens=request.max_tokens,
            temperature=0.0,
            stop=stops,
            grammar=LlamaGrammar.from_string(request.grammar, verbose=False),
        )
        assert lazy.text == full["choices"][0]["text"], row["id"]


def literal_segments_follow_the_query(template: str, query: str) -> bool:
    """The template's text outside tags is the query's segments, in order."""
    literal = [text for _, text in segments(re.sub(r"<fi>.*?</fi>", " ", template))]
    query_segments = iter(text for _, text in segments(query))
    return all(any(s == q for q in query_segments) for s in literal)


def test_real_queries_become_a_bank_every_answer_well_formed(llm, tmp_path):
    rows = real_slice(12, 341)  # spread over every source, long chat prompts included
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "templates"
    stats = run_templatize([queries], out, load_config(), llm=llm, show_progress=False, log=lambda m: None)

    step = stats["templatize"]
    assert step["in"] == step["out"] + sum(step["skipped"].values()) + sum(step["failed"].values())
    assert step["out"] >= 1
    assert set(step["failed"]) <= KNOWN_REASONS
    # The grammar carries the format: no answer fails to parse as JSON.
    assert "invalid_output" not in step["failed"]
    by_id = {r["id"]: r["text"] for r in rows}
    for template in read_rows([out], TemplateRow):
        query = by_id[template.query_id]
        assert template_problems(template.template, template.compatible_document_description, query) == []
        assert literal_segments_follow_the_query(template.template, query)
        assert template.complexity == len(template.variables) >= 1
    rejects = [json.loads(line) for line in beside(out, ".rejects.jsonl").read_text().splitlines()]
    assert all(r["raw_output"] for r in rejects if r["stage"] == "templatize")
    assert sum(stats["complexity_histogram"].values()) == step["out"]


def test_templatize_command_on_real_queries(tmp_path):
    out = tmp_path / "bank"
    result = CliRunner().invoke(main, ["templatize", str(QUERIES), "-o", str(out), "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "templatized 3 queries: " in result.stderr
    assert (out / "stats.json").is_file()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["templatize"]["in"] == 3
    assert stats["templatize"]["constraint"] == "query"
    # The request cache beside the bank answers a re-run without the model.
    again = CliRunner().invoke(main, ["templatize", str(QUERIES), "-o", str(out), "--limit", "3", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "stats.json").read_text())["templatize"]["out"] == stats["templatize"]["out"]
    assert beside(out, ".cache.sqlite").is_file()


def test_unconstrained_and_constrained_requests_share_the_kv_cache(llm):
    system = ("system", "You answer briefly. " * 40)
    plain = Request.chat(system, ("user", "Say hello."), max_tokens=8)
    constrained = Request.chat(system, ("user", "Say hi."), max_tokens=8, grammar='root ::= "hi"')
    first, second, third = llm.generate([plain, constrained, plain])
    assert second.text == "hi" and second.cached_tokens > 0.8 * second.prompt_tokens
    assert third.cached_tokens > 0.8 * third.prompt_tokens
    assert first.text == third.text
