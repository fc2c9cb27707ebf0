"""Genericity rules: a template must abstract its query's specifics."""

import pytest

from fineinstructions.text.genericity import specifics, template_problems
from fineinstructions.text.prompting import load_prompt

DESCRIPTION = "A reference article about a place that says where it lies and what it is known for."


def reasons(template, query, description=DESCRIPTION):
    return [p.reason for p in template_problems(template, description, query)]


def test_a_generic_template_passes():
    assert reasons("where is <fi>a city</fi> and what is it known for", "where is Lyon and what is it known for") == []


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("where is <fi>a city", "unclosed_tag"),
        ("where is </fi>", "stray_tag"),
        ("<fi>a <fi>b</fi></fi>", "nested_tag"),
        ("where is <fi>  </fi>", "empty_tag"),
        ("where is a city", "no_variables"),
    ],
)
def test_syntax_problems_are_reported_alone(template, reason):
    assert reasons(template, "where is Lyon") == [reason]


def test_copy_of_query_even_with_a_tag_added():
    assert "copy_of_query" in reasons("where is lyon <fi>a detail</fi>", "Where is Lyon?")
    assert "copy_of_query" not in reasons("where is <fi>a city</fi>", "where is Lyon")


def test_numbers_survive_only_outside_tags():
    query = "what happened in 1969 on the moon"
    assert "leftover_number" in reasons("what happened in 1969 on <fi>a place</fi>", query)
    assert "leftover_number" not in reasons("what happened in <fi>a year 1969</fi> on <fi>a place</fi>", query)
    # A number that is only part of a longer one is not the same number.
    assert "leftover_number" not in reasons("what happened in 19690 on <fi>a place</fi>", query)


def test_quoted_strings_of_every_quote_style():
    for quoted in ('"Blue Moon"', "“Blue Moon”", "'Blue Moon'", "‘Blue Moon’"):
        query = f"who sang {quoted} first"
        assert "leftover_quote" in reasons("who sang Blue Moon <fi>when</fi>", query), quoted
    # Apostrophes are not quotes.
    assert specifics("don't stop, it's fine")["quote"] == set()


def test_capitalised_names_but_not_sentence_starts_or_I():
    found = specifics("What does NASA do? Tell me. I think Elon Musk knows. OK then")
    assert found["name"] == {"NASA", "Elon", "Musk"}
    assert "leftover_name" in reasons("What does NASA do with <fi>a topic</fi>", "What does NASA do with rockets")
    # The same word in lower case is not the name.
    assert "leftover_name" not in reasons("how do <fi>a name</fi> apples grow", "how do Granny apples grow")


def test_title_case_queries_only_count_names_with_inner_capitals():
    query = "Showing A Menu When Only Users Are Logged In With PowerShell"
    assert specifics(query)["name"] == {"PowerShell"}
    assert reasons("Showing A Menu When Only <fi>a group</fi> Are Logged In With <fi>a tool</fi>", query) == []


def test_description_rules():
    assert reasons("where is <fi>a city</fi>", "where is Lyon", description=" ") == ["empty_description"]
    assert reasons("where is <fi>a city</fi>", "where is Lyon", description="Where is a city?") == [
        "description_repeats_template"
    ]


def test_several_problems_are_all_reported():
    got = reasons("top 10 films by Kubrick <fi>a genre</fi>", "top 10 films by Kubrick", description="")
    assert got == ["copy_of_query", "leftover_number", "leftover_name", "empty_description"]


def test_the_packaged_prompt_examples_are_valid_generic_templates():
    prompt = load_prompt("templatize-v1")
    assert len(prompt.examples) >= 4
    for example in prompt.examples:
        assert template_problems(example["template"], example["compatible_document_description"], example["query"]) == []
