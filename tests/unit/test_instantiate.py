"""The instantiate stage's rules, with a scripted backend."""

import json
import re

import pytest

from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import Capabilities, Completion, context_overflow
from fineinstructions.records import DocumentRow, PairRow, TemplateRow
from fineinstructions.stages.instantiate import Instantiator, parse_answer
from fineinstructions.text.excerpt import expand_excerpts
from fineinstructions.text.instantiate_grammar import (
    chunk_region,
    document_grammar,
    excerpt_anchors,
    sentence_offsets,
)

DOCUMENT = (
    "Owls hunt mostly at night. Their soft feathers let them fly almost silently. "
    "An owl can turn its head about 270 degrees, because it cannot move its eyes. "
    "Most owls swallow small prey whole and later cough up pellets of bone and fur."
)
DOC = DocumentRow(id="d-owls", text=DOCUMENT, source="test")


def template(text: str, id: str = "t-1") -> TemplateRow:
    return TemplateRow(
        id=id, query_id="q-" + id, source="test", template=text, compatible_document_description="d",
        variables=(), complexity=1, model="m", prompt_version="v",
    )


HUNT = template("how do <fi>a kind of bird</fi> hunt", "t-hunt")


def reply(instruction: str, answer: str) -> str:
    return json.dumps({"instruction": instruction, "answer": answer})


def run(*replies, templates=(HUNT,), document=DOC, **options):
    llm = ScriptedLLM(replies)
    stage = Instantiator(llm, constraint="none", **options)
    return stage([(document, list(templates))]), llm


def test_a_grounded_answer_becomes_a_pair_with_spans_and_provenance():
    answer = "<excerpt>Owls hunt mostly<...>at night.</excerpt> <excerpt>Their soft feathers<...>almost silently.</excerpt>"
    result, _ = run(reply("how do owls hunt", answer))
    assert not result.failed and not result.skipped
    [pair] = result.pairs
    assert pair.answer == "Owls hunt mostly at night. Their soft feathers let them fly almost silently."
    assert [DOCUMENT[s:e] for s, e in pair.excerpt_spans] == [
        "Owls hunt mostly at night.",
        "Their soft feathers let them fly almost silently.",
    ]
    assert pair.excerpt_ratio == pytest.approx(1 - 1 / len(pair.answer))
    assert pair.id == PairRow.make_id("d-owls", "t-hunt")
    assert (pair.document_id, pair.template_id, pair.query_id) == ("d-owls", "t-hunt", "q-t-hunt")
    assert pair.instantiate_model == "fake:scripted"
    assert pair.instantiate_prompt_version == "instantiate-v1"
    assert pair.document_chars is None
    assert result.markers == 2 and result.unresolved_markers == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (reply("how do owls hunt", "<excerpt>Penguins swim<...>at night.</excerpt>"), "unresolved_marker"),
        (reply("how do owls hunt", "<excerpt>Owls hunt mostly<...>at night."), "unresolved_marker"),
        (reply("how do owls hunt", "<excerpt>Most owls<...>soft feathers</excerpt>"), "unresolved_marker"),
        (reply("how do <fi>a kind of bird</fi> hunt", "<excerpt>Owls hunt mostly<...>at night.</excerpt>"), "template_tag_in_instruction"),
        (reply("  ", "<excerpt>Owls hunt mostly<...>at night.</excerpt>"), "empty_instruction"),
        (reply("how do owls hunt", ""), "empty_answer"),
        (
            reply("how do owls hunt", "<excerpt>Owls hunt mostly<...>at night.</excerpt> and <excerpt>Owls hunt mostly<...>at night.</excerpt>"),
            "repeated_excerpt",
        ),
        (
            reply("how do owls hunt", "Owls are birds that many people find beautiful and mysterious: <excerpt>Owls hunt mostly<...>at night.</excerpt>"),
            "low_excerpt_ratio",
        ),
        ("the owls hunt at night", "invalid_output"),
        ('{"instruction": "how do owls hunt"}', "invalid_output"),
    ],
)
def test_each_failure_is_counted_by_reason_and_kept_with_the_raw_output(raw, reason):
    result, _ = run(raw)
    assert result.pairs == []
    assert result.failed == {reason: 1}
    [reject] = result.rejects
    assert (reject.stage, reject.reason, reject.raw_output) == ("instantiate", reason, raw)
    assert reject.input_id == PairRow.make_id("d-owls", "t-hunt")
    assert reject.model == "fake:scripted"


def test_an_ambiguous_marker_fails_and_is_counted():
    document = DocumentRow(id="d-2", text="The cat sat. The dog ran. The cat sat. The end.", source="t")
    # "The" starts four spans ending in "sat.", with different texts: never guessed.
    result, _ = run(reply("x", "<excerpt>The<...>sat.</excerpt>"), document=document)
    assert result.failed == {"ambiguous_marker": 1}
    assert result.ambiguous_markers == 1


def test_null_is_a_skip_never_a_pair():
    result, _ = run("null")
    assert result.pairs == [] and result.failed == {}
    assert result.skipped == {"incompatible": 1}
    assert result.rejects[0].reason == "incompatible"


def test_hitting_max_tokens_and_backend_errors_are_failures():
    truncated = Completion(text='{"instruction": "how do owls', finish_reason="length")
    overflow = context_overflow(9000, 4096)
    result, _ = run(truncated, overflow, templates=(HUNT, template("why do <fi>birds</fi> sing", "t-2")))
    assert result.failed == {"truncated": 1, "context_overflow": 1}
    assert result.rejects[1].detail == "the prompt has 9000 tokens; the context window holds 4096"


def test_the_min_excerpt_ratio_is_configurable():
    raw = reply("how do owls hunt", "In short: <excerpt>Owls hunt mostly<...>at night.</excerpt>")
    strict, _ = run(raw)
    lenient, _ = run(raw, min_excerpt_ratio=0.5)
    assert strict.failed == {"low_excerpt_ratio": 1}
    assert len(lenient.pairs) == 1


def test_requests_put_the_document_first_and_go_out_grouped_by_document():
    other = DocumentRow(id="d-other", text="Bees make honey from nectar. They store it in wax cells.", source="t")
    templates = [HUNT, template("why do <fi>birds</fi> sing", "t-2")]
    llm = ScriptedLLM(["null"] * 4)
    stage = Instantiator(llm)
    stage([(DOC, templates), (other, templates)])
    assert llm.batches == [4]  # one generate call for the batch
    users = [call.messages[-1].content for call in llm.calls]
    assert [DOCUMENT in u for u in users] == [True, True, False, False]
    for user, t in zip(users, templates * 2, strict=True):
        assert user.index("Document:") < user.index(t.template)  # the document comes first
    # The two requests of one document share everything up to the template.
    first, second = (call.messages for call in llm.calls[:2])
    assert first[:-1] == second[:-1]
    assert users[0].split("Template:")[0] == users[1].split("Template:")[0]
    assert all(call.prompt_version == "instantiate-v1" for call in llm.calls)


def test_fineinstructions_mode_sends_the_released_models_json_contract():
    llm = ScriptedLLM([reply("how do owls hunt", "<excerpt>Owls hunt mostly<...>at night.</excerpt>")])
    stage = Instantiator(llm, mode="fineinstructions")
    result = stage([(DOC, [HUNT])])
    [call] = llm.calls
    assert [m.role for m in call.messages] == ["user"]
    assert json.loads(call.messages[0].content) == {"instruction_template": HUNT.template, "document": DOCUMENT}
    assert call.grammar is None and call.json_schema is None
    assert len(result.pairs) == 1
    assert result.pairs[0].instantiate_prompt_version == "fineinstructions-template_instantiator"


def test_a_document_too_long_for_the_context_is_cut_and_the_cut_is_recorded():
    sentence = "Owls hunt mostly at night and rest by day in hollow trees. "
    long_text = sentence * 400  # 4,400 words; the scripted backend counts words as tokens
    document = DocumentRow(id="d-long", text=long_text, source="t")
    llm = ScriptedLLM([reply("how do owls hunt", "<excerpt>Owls hunt mostly<...>by day in hollow trees.</excerpt>")])
    stage = Instantiator(llm, context_window=1024, max_tokens=128)
    result = stage([(document, [HUNT])])
    [call] = llm.calls
    total = sum(llm.count_tokens(m.content) for m in call.messages)
    assert total + 128 <= 1024
    assert result.truncated_documents == 1
    [pair] = result.pairs
    assert pair.document_chars is not None and pair.document_chars < len(long_text)
    assert long_text.startswith(call.messages[-1].content.split("Document:\n", 1)[1].split("\n\nTemplate:")[0])
    assert call.messages[-1].content.split("\n\nTemplate:")[0].endswith("trees.")  # cut at a sentence end


def test_parse_answer_is_lenient_about_wrapping():
    assert parse_answer('```json\n{"instruction": "a", "answer": "b"}\n```') == ("a", "b")
    assert parse_answer('Here: {"instruction": "a", "response": "b"}') == ("a", "b")
    assert parse_answer("null") is None
    assert parse_answer('{"instruction": null, "answer": null}') is None
    assert parse_answer("no json here") is False


# ---------------------------------------------------------------- the per-document grammar


def test_anchor_prefixes_are_unique_in_the_document():
    text = "The cat sat on the mat. The cat ran away fast. A dog barked."
    anchors = excerpt_anchors(text)
    assert [a.prefix for a in anchors] == ["The cat sat", "The cat ran", "A"]
    for anchor in anchors:
        assert text.count(anchor.prefix) == 1
    assert [a.suffix for a in anchors] == ["on the mat.", "away fast.", "dog barked."]


def test_every_marker_the_grammar_allows_resolves_to_one_span():
    anchors = excerpt_anchors(DOCUMENT)
    markers = 0
    for i, start in enumerate(anchors):
        for end in anchors[i:]:
            if start.prefix is None or end.suffix is None:
                continue
            expansion = expand_excerpts(f"<excerpt>{start.prefix}<...>{end.suffix}</excerpt>", DOCUMENT)
            assert expansion.ok and expansion.excerpt_ratio == 1.0, (start, end)
            markers += 1
    assert markers >= 10


def test_the_grammar_names_only_document_text_and_the_templates_words():
    grammar = document_grammar(DOCUMENT, HUNT.template, max_excerpts=2)
    assert grammar.startswith('root ::= "null" | ')
    assert '"how do " value " hunt"' in grammar
    for anchor in excerpt_anchors(DOCUMENT):
        if anchor.prefix:
            assert json.dumps(anchor.prefix) in grammar
    assert "(gap excerpt){0,1}" in grammar
    assert "(gap excerpt)" not in document_grammar(DOCUMENT, HUNT.template, max_excerpts=1)
    assert document_grammar("", HUNT.template) is None


def test_the_grammar_escapes_quotes_and_newlines_as_json_does():
    text = 'He said "stop" now.\nThen he left the room quietly.'
    grammar = document_grammar(text, HUNT.template)
    # Inside the JSON string the quotes are written \" ; the GBNF literal escapes that again.
    assert r'"\\\"stop\\\" now."' in grammar
    assert r'"Then he left"' in grammar


def test_a_prompt_file_with_an_incomplete_example_is_a_clear_error(tmp_path):
    from fineinstructions.errors import ConfigError

    prompt = tmp_path / "mine.toml"
    prompt.write_text('version = "mine-1"\nsystem = "Write pairs."\n[[examples]]\ndocument = "A text."\ntemplate = "what is <fi>x</fi>"\n')
    with pytest.raises(ConfigError, match="example 1 needs an instruction and an answer"):
        Instantiator(ScriptedLLM([]), prompt=str(prompt))


def test_the_released_instantiators_column_names_are_accepted():
    """The public FineInstructions dataset names its columns ``instantiated_instruction``
    and ``answer``; the released instantiator may answer with those keys."""
    assert parse_answer('{"instantiated_instruction": "how do owls hunt", "answer": "b"}') == ("how do owls hunt", "b")
    raw = json.dumps(
        {"instantiated_instruction": "how do owls hunt", "answer": "<excerpt>Owls hunt mostly<...>at night.</excerpt>"}
    )
    llm = ScriptedLLM([raw])
    result = Instantiator(llm, mode="fineinstructions")([(DOC, [HUNT])])
    [pair] = result.pairs
    assert pair.instruction == "how do owls hunt" and pair.answer == "Owls hunt mostly at night."


def test_constraint_auto_follows_what_the_backend_declares():
    assert Instantiator(ScriptedLLM(capabilities=Capabilities(constrains_gbnf=True))).constraint == "document"
    assert Instantiator(ScriptedLLM(capabilities=Capabilities(constrains_json_schema=True))).constraint == "schema"
    assert Instantiator(ScriptedLLM()).constraint == "none"


def test_fit_method_names_how_the_backend_counts_tokens():
    assert Instantiator(ScriptedLLM(), context_window=1024).fit_method == ScriptedLLM.token_count_method
    assert Instantiator(ScriptedLLM()).fit_method is None  # documents are sent whole


# -- excerpts from the matched region ---------------------------------------------------

LONG = " ".join(f"Fact number {n} about owls is worth knowing well." for n in range(1, 21))


def starts_in(grammar: str) -> set[int]:
    """The facts (sentences of LONG, by number) an excerpt may start at under ``grammar``."""
    openings = re.findall(r'^x\d+ ::= "([^"]*)"', grammar, re.MULTILINE)
    return {int(re.search(r"\d+", opening).group()) for opening in openings}


def facts_starting_in(region: tuple[int, int]) -> set[int]:
    return {n for n, o in enumerate(sentence_offsets(LONG), 1) if region[0] <= o < region[1]}


def test_a_chunks_region_is_a_window_around_its_centre():
    # 5 local vectors: centres at 1/6 .. 5/6 of the document.
    assert chunk_region(3, 5, 1200, 0.1) == (480, 721)
    assert chunk_region(1, 5, 1200, 0.25) == (0, 500)
    assert chunk_region(0, 5, 1200, 0.1) is None  # the global vector: anywhere
    assert chunk_region(6, 5, 1200, 0.1) is None  # not a chunk of this embedding
    assert chunk_region(2, 5, 1200, None) is None


def test_the_region_grammar_admits_only_starts_in_the_region():
    region = chunk_region(3, 5, len(LONG), 0.1)
    inside = facts_starting_in(region)
    assert inside == {10, 11, 12, 13}  # the middle of the document
    everywhere = starts_in(document_grammar(LONG, HUNT.template))
    restricted = starts_in(document_grammar(LONG, HUNT.template, region=region))
    assert len(everywhere) == 20
    assert restricted == inside
    # Excerpts may still end at any later sentence, up to the last (t19).
    assert "\nt19 ::= " in document_grammar(LONG, HUNT.template, region=region)


def test_a_region_with_too_few_sentences_widens_to_the_nearest_ones():
    offsets = sentence_offsets(LONG)
    middle = offsets[9] + 3  # inside sentence 10: no sentence starts in a 1-character region
    restricted = starts_in(document_grammar(LONG, HUNT.template, region=(middle, middle + 1)))
    assert restricted == {9, 10, 11}


def test_sentence_offsets_point_at_each_sentence():
    text = "  First one here. Second one!\n\nThird  one; and more"
    assert [text[o:o + 5] for o in sentence_offsets(text)] == ["First", "Secon", "Third", "and m"]


def test_each_request_is_held_to_the_region_of_the_chunk_that_retrieved_its_template():
    document = DocumentRow(id="d-long", text=LONG, source="test")
    llm = ScriptedLLM(["null", "null"], capabilities=Capabilities(constrains_gbnf=True))
    stage = Instantiator(llm, region_window=0.1, num_chunks=5)
    other = template("why are <fi>a kind of bird</fi> quiet", "t-other")
    stage([(document, [HUNT, other], [0, 1])])
    anywhere, first_chunk = (starts_in(call.grammar) for call in llm.calls)
    assert len(anywhere) == 20  # retrieved by the global vector
    assert first_chunk == facts_starting_in(chunk_region(1, 5, len(LONG), 0.1)) == {3, 4, 5, 6}


def test_without_a_grammar_the_prompt_names_where_the_region_starts():
    document = DocumentRow(id="d-long", text=LONG, source="test")
    llm = ScriptedLLM(["null"])
    Instantiator(llm, constraint="none", region_window=0.1)([(document, [HUNT], [3])])
    user = llm.calls[0].messages[-1].content
    assert user.endswith('most likely starts at: "Fact number 10 about owls is worth knowing"')
