import pytest
from hypothesis import given
from hypothesis import strategies as st

from fineinstructions.errors import TemplateSyntaxError
from fineinstructions.text.template import parse_template, validate_template


def kinds(text):
    return [problem.kind for problem in validate_template(text)]


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        ("what effects does <fi>a medical or psychological condition</fi> have?",
         ["a medical or psychological condition"]),
        ("how to <fi>a few word description of the action</fi> <fi>name of a service or platform</fi>?",
         ["a few word description of the action", "name of a service or platform"]),
        ("Compare and contrast <fi>entity A</fi> and <fi>entity B</fi>", ["entity A", "entity B"]),
        ("<fi>x</fi>", ["x"]),
        ("<fi>type of document</fi> vs another <fi>type of document</fi>", ["type of document"]),
        ("<fi>b</fi> <fi>a</fi> <fi>b</fi> <fi>c</fi>", ["b", "a", "c"]),
    ],
)
def test_variables_are_distinct_descriptions_in_order_of_first_appearance(text, variables):
    template = parse_template(text)
    assert template.variables == variables
    assert template.complexity == len(variables)
    assert validate_template(text) == []


def test_descriptions_are_one_variable_whatever_their_whitespace():
    template = parse_template("<fi>type of  document</fi> and <fi> type of\ndocument </fi>")
    assert template.variables == ["type of document"]
    assert template.complexity == 1
    assert len(template.occurrences) == 2


def test_descriptions_differing_in_case_are_different_variables():
    assert parse_template("<fi>City</fi> or <fi>city</fi>").complexity == 2


def test_unicode_descriptions_and_text():
    template = parse_template("¿Cómo se dice <fi>一个词</fi> en <fi>idioma 🌍</fi>?")
    assert template.variables == ["一个词", "idioma 🌍"]


def test_many_variables():
    text = " ".join(f"<fi>thing {i}</fi>" for i in range(12))
    assert parse_template(text).complexity == 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no tags at all", ["no_variables"]),
        ("", ["no_variables"]),
        ("fi tags in the wrong case <FI>x</FI>", ["no_variables"]),
        ("what is <fi>a thing", ["unclosed"]),
        ("what is <fi>a</fi> and <fi>b", ["unclosed"]),
        ("what is a thing</fi>", ["stray"]),
        ("</fi><fi>x</fi>", ["stray"]),
        ("<fi>x</fi></fi>", ["stray"]),
        ("<fi>outer <fi>inner</fi> rest</fi>", ["nested"]),
        ("<fi>a <fi>b</fi>", ["nested", "unclosed"]),
        ("<fi></fi>", ["empty"]),
        ("<fi>   \n\t</fi> and <fi>x</fi>", ["empty"]),
        ("<fi></fi> <fi>", ["empty", "unclosed"]),
    ],
)
def test_problems(text, expected):
    assert kinds(text) == expected


def test_problems_are_messages_that_name_the_problem_and_its_position():
    (problem,) = validate_template("how do I <fi>verb something")
    assert isinstance(problem, str)
    assert "unclosed" in problem
    assert problem.offset == 9
    assert "character 9" in problem


def test_every_problem_is_reported_not_just_the_first():
    assert kinds("</fi> <fi></fi> <fi>a <fi>b</fi> c</fi> <fi>") == [
        "stray",
        "empty",
        "nested",
        "unclosed",
    ]


def test_parse_raises_with_every_problem():
    with pytest.raises(TemplateSyntaxError) as raised:
        parse_template("<fi></fi> and </fi>")
    assert [p.kind for p in raised.value.problems] == ["empty", "stray"]
    assert isinstance(raised.value, ValueError)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        validate_template(None)
    with pytest.raises(TypeError):
        parse_template(b"<fi>x</fi>")


def test_fill_replaces_every_occurrence_of_a_variable():
    template = parse_template("Is <fi>a city</fi> bigger than <fi>another city</fi>? Tell me about <fi>a city</fi>.")
    filled = template.fill({"a city": "Lyon", "another city": "Porto"})
    assert filled == "Is Lyon bigger than Porto? Tell me about Lyon."
    with pytest.raises(KeyError):
        template.fill({"a city": "Lyon"})


def test_literal_text_drops_tags():
    template = parse_template("how to <fi>verb</fi> a <fi>noun</fi>  quickly")
    assert template.literal_text() == "how to a quickly"


def test_huge_template_parses_in_linear_time():
    text = "word <fi>a slot</fi> " * 50_000
    assert parse_template(text).complexity == 1
    assert len(parse_template(text).occurrences) == 50_000


descriptions = st.text(
    alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda s: s.strip())
literals = st.text(alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(st.tuples(literals, descriptions), min_size=1, max_size=6), literals)
def test_any_well_formed_template_is_valid_and_counts_distinct_variables(parts, tail):
    text = "".join(f"{lit}<fi>{desc}</fi>" for lit, desc in parts) + tail
    template = parse_template(text)
    normalised = [" ".join(desc.split()) for _, desc in parts]
    assert template.variables == list(dict.fromkeys(normalised))
    assert template.complexity == len(set(normalised))


@given(st.lists(st.sampled_from(["<fi>", "</fi>", "a", " ", "\n"]), max_size=30).map("".join))
def test_validate_never_raises_and_agrees_with_parse(text):
    problems = validate_template(text)
    if problems:
        with pytest.raises(TemplateSyntaxError):
            parse_template(text)
    else:
        assert parse_template(text).complexity >= 1
