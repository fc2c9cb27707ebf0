"""The per-query template grammar, as text (the real-model tests check what it allows)."""

import re

from fineinstructions.text.templatize_grammar import (
    MAX_SEGMENTS,
    query_template_grammar,
    segments,
)


def rules(grammar: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())


def test_segments_keep_words_punctuation_and_spacing():
    assert segments("How's it going,  Bob?!") == [("", "How's"), (" ", "it"), (" ", "going"), ("", ","), (" ", "Bob"), ("", "?!")]
    assert segments("  ") == []


def test_every_rule_referenced_is_defined_and_words_are_json_escaped():
    grammar = query_template_grammar('say "hi" to C:\\Users please')
    defined = rules(grammar)
    referenced = set(re.findall(r"\b([ab]\d+|tag|desc|sentence)\b", grammar))
    assert referenced <= set(defined)
    # A quote and a backslash are written as their JSON escapes (\" and \\), GBNF-quoted.
    assert defined["b2"] == r'" " "\\\"" b3'
    assert defined["b7"] == r'":\\\\" b8'


def test_a_variable_must_appear_before_the_end():
    defined = rules(query_template_grammar("where is Paris"))
    # In the no-tag-yet layer, the last word can only become a tag.
    assert defined["a3"] == '" " tag'
    # After a tag, the last word may be copied and the template may end.
    assert '" " "Paris"' in defined["b3"].split(" | ")


def test_tags_never_cover_bare_punctuation():
    defined = rules(query_template_grammar("where is Paris ?"))
    assert defined["b4"] == '" " "?"'


def test_tag_spans_are_bounded():
    defined = rules(query_template_grammar(" ".join(f"w{i}" for i in range(20)), max_span=3))
    assert defined["a1"] == '"w0" a2 | tag b2 | tag b3 | tag b4'


def test_queries_without_words_or_too_long_get_no_grammar():
    assert query_template_grammar("?!") is None
    assert query_template_grammar("") is None
    assert query_template_grammar(" ".join(["w"] * (MAX_SEGMENTS + 1))) is None
    assert query_template_grammar(" ".join(["w"] * MAX_SEGMENTS)) is not None
