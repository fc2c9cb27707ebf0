"""Silver data for the helpers from a scripted teacher: the pipeline's validation drops
each kind of bad output, the kept examples are in the released models' contract, the
excerpt markers are written back compactly and expand to the teacher's text, and the
share of deliberately mismatched ``null`` examples holds."""

import json

import pyarrow.parquet as pq
import pytest

from fineinstructions.config import load_config
from fineinstructions.errors import ConfigError, UserError
from fineinstructions.experiments.silver import compact_answer, null_count, read_silver
from fineinstructions.interface.cli.distill import teacher_settings
from fineinstructions.interface.distill import distill_instantiator, distill_templatizer
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.stages.instantiate import released_user_turn
from fineinstructions.text.excerpt import expand_excerpts

DOCUMENT = (
    "Sourdough starts with a culture of wild yeast. The culture is fed flour and water every day. "
    "After a week the culture smells sour and doubles in size. Bakers then mix it into the dough. "
    "The culture is fed flour and water again before the next bake."
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def silver_rows(folder):
    return [row for path in sorted(folder.glob("part-*.parquet")) for row in pq.read_table(path).to_pylist()]


def rejects(folder):
    return [json.loads(line) for line in (folder / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_compact_answer_expands_back_to_the_teachers_text():
    first = DOCUMENT.index("The culture is fed")
    first_end = DOCUMENT.index("every day.") + len("every day.")
    second = DOCUMENT.index("After a week")
    second_end = DOCUMENT.index("doubles in size.") + len("doubles in size.")
    answer = f"In short: {DOCUMENT[first:first_end]} Then: {DOCUMENT[second:second_end]}"
    compact = compact_answer(answer, [(first, first_end), (second, second_end)], DOCUMENT)
    assert compact is not None and compact.count("<excerpt>") == 2 and len(compact) < len(answer) + 40
    assert expand_excerpts(compact, DOCUMENT).text == answer
    # "The culture is fed flour and water" opens two sentences: the marker is widened
    # until it names the right one.
    assert "<...>" in compact and compact.startswith("In short: <excerpt>The culture is fed")


def test_an_answer_that_does_not_quote_its_spans_is_not_compacted():
    assert compact_answer("nothing quoted here", [(0, 9)], DOCUMENT) is None


def test_the_null_count_makes_the_share():
    assert null_count(19, 0.05) == 1 and null_count(30, 0.25) == 10 and null_count(0, 0.05) == 0
    with pytest.raises(UserError):
        null_count(10, 1.0)


QUERIES = [
    "how do I reset my router password",
    "what are the side effects of ibuprofen",
    "write a poem about the sea",
    "how to learn python fast",
    "best way to store fresh basil",
]


def templatize_reply(template: str, description: str = "A practical guide that explains the steps with examples.") -> str:
    return json.dumps({"template": template, "compatible_document_description": description})


def test_templatizer_silver_keeps_valid_templates_only_in_the_released_contract(tmp_path):
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)])
    teacher = ScriptedLLM([
        templatize_reply("how do I reset my <fi>device</fi> password"),
        "this is not JSON at all",
        templatize_reply("write a poem about the sea"),  # no variable
        templatize_reply("how to learn python fast <fi>x</fi>"),  # the query with a tag glued on
        templatize_reply("best way to store fresh <fi>a herb</fi>"),
    ])
    out = tmp_path / "silver"
    stats = distill_templatizer([queries], out, load_config(), llm=teacher, show_progress=False, log=lambda m: None)
    rows = silver_rows(out)
    assert [row["query_id"] for row in rows] == ["q0", "q4"]
    for row in rows:
        user, assistant = row["messages"]
        assert user == {"role": "user", "content": QUERIES[int(row["query_id"][1:])]}
        target = json.loads(assistant["content"])
        assert set(target) == {"template", "compatible_document_description"} and "<fi>" in target["template"]
        assert row["target"] == "template" and row["teacher"] == "fake:scripted"
    reasons = {r["reason"] for r in rejects(out)}
    assert {"invalid_output", "no_variables", "copy_of_query"} <= reasons
    assert stats["rows"] == 2 and stats["teacher_outputs"]["in"] == 5 and stats["validation_pass_rate"] == 0.4
    assert len(read_silver(out, "templatizer")) == 2
    with pytest.raises(UserError, match="templatizer, not the instantiator"):
        read_silver(out, "instantiator")
    # Run again: every stage is finished and no model call is made (the teacher has no reply left).
    again = distill_templatizer([queries], out, load_config(), llm=ScriptedLLM([]), show_progress=False, log=lambda m: None)
    assert again["rows"] == 2
    with pytest.raises(UserError, match="other inputs or settings"):
        distill_templatizer([queries], out, load_config(), limit=2, llm=ScriptedLLM([]), show_progress=False, log=lambda m: None)


class RuleTeacher(ScriptedLLM):
    """Answers each instantiate request by a rule named in its template's text: quote
    the document's first sentence (good), quote text the document lacks (bad marker),
    answer mostly in its own words (low excerpt ratio), or null."""

    def generate(self, requests):
        replies = []
        for request in requests:
            turn = request.messages[-1].content
            document = turn.split("Document:\n", 1)[1].rsplit("\n\nTemplate: ", 1)[0]
            template = turn.rsplit("\n\nTemplate: ", 1)[1]
            first = document.split(". ")[0] + "."
            instruction = template.replace("<fi>", "").replace("</fi>", "")
            if "good" in template:
                answer = f"<excerpt>{first}</excerpt>"
            elif "badmarker" in template:
                answer = "<excerpt>words the document never says</excerpt>"
            elif "wordy" in template:
                answer = "Let me explain this at length in my own words, with many words of my own before a quote. " + first[:12]
            else:
                replies.append("null")
                continue
            replies.append(json.dumps({"instruction": instruction, "answer": answer}))
        self.queue(*replies)
        return super().generate(requests)


TEMPLATES = [
    ("Explain how <fi>a process</fi> works, good", "A document describing how a process works, step by step."),
    ("Summarise <fi>a topic</fi> for a beginner, good", "An introduction to a topic for beginners."),
    ("What is the history of <fi>a thing</fi>, good", "A history of a thing, from its origins."),
    ("List the steps of <fi>a task</fi>, badmarker", "Instructions for a task, as numbered steps."),
    ("Why does <fi>a phenomenon</fi> happen, wordy", "An explanation of the causes of a phenomenon."),
    ("Compare <fi>option A</fi> and <fi>option B</fi>", "A comparison of two options with pros and cons."),
    ("How do I fix <fi>a problem</fi> with <fi>a device</fi>, good", "A troubleshooting guide for a device."),
    ("Recommend <fi>a product</fi> for <fi>a purpose</fi>", "A review of products for a purpose."),
    ("Describe the life of <fi>a person</fi>, good", "A biography of a person."),
    ("What are the rules of <fi>a game</fi>", "A description of a game and its rules."),
]
DOCUMENTS = [
    DOCUMENT,
    "The tide rises twice a day. The moon pulls the oceans toward it. Coastal towns publish tide tables for sailors.",
    "Chess is played on a board of sixty-four squares. Each player starts with sixteen pieces. The aim is checkmate.",
    "A bicycle chain needs oil every few hundred miles. A dry chain squeaks and wears the gears. Wipe off the extra oil.",
]


def test_instantiator_silver_keeps_grounded_pairs_and_the_null_share(tmp_path):
    documents = write_jsonl(tmp_path / "documents.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCUMENTS)])
    bank = write_jsonl(tmp_path / "bank.jsonl", [{"template": t, "compatible_document_description": d} for t, d in TEMPLATES])
    config = load_config(overrides=["match.threshold=-1", "instantiate.relevance=false", "instantiate.region_window=null"])
    out = tmp_path / "silver"
    stats = distill_instantiator([documents], [bank], out, config, null_share=0.25, llm=RuleTeacher(),
                                 show_progress=False, log=lambda m: None)
    rows = silver_rows(out)
    pairs = [row for row in rows if row["target"] == "pair"]
    nulls = [row for row in rows if row["target"] == "null"]
    assert stats["teacher_outputs"]["in"] == 6 * len(DOCUMENTS)  # six templates a document, one per vector
    assert pairs and all("good" in json.loads(r["messages"][0]["content"])["instruction_template"] for r in pairs)
    assert len(nulls) == null_count(len(pairs), 0.25) and stats["null_share"] == round(len(nulls) / len(rows), 4)
    texts = dict(enumerate(DOCUMENTS))
    for row in pairs:
        user = json.loads(row["messages"][0]["content"])
        assert list(user) == ["instruction_template", "document"]
        assert row["messages"][0]["content"] == released_user_turn(user["document"], user["instruction_template"])
        assert user["document"] == texts[int(row["document_id"][1:])]
        target = json.loads(row["messages"][1]["content"])
        assert "<excerpt>" in target["answer"] and "<fi>" not in target["instruction"]
        assert expand_excerpts(target["answer"], user["document"]).ok
    matched = {(r["document_id"], r["template_id"]) for r in pairs}
    for row in nulls:
        assert row["messages"][1]["content"] == "null" and (row["document_id"], row["template_id"]) not in matched
    reasons = {r["reason"] for r in rejects(out)}
    assert {"unresolved_marker", "low_excerpt_ratio", "incompatible"} <= reasons
    assert stats["validation_pass_rate"] == round(len(pairs) / stats["teacher_outputs"]["in"], 4)


def test_a_teacher_file_names_its_backend_and_a_wrong_one_says_how_to_write_it(tmp_path):
    good = tmp_path / "teacher.toml"
    good.write_text('prompt = "instantiate-v1"\n[llm]\nbackend = "openai"\nmodel = "big"\nbase_url = "http://h:8000/v1"\n')
    settings = teacher_settings(str(good), "instantiate")
    config = load_config(settings=settings)
    assert config.instantiate.llm.backend == "openai" and config.instantiate.llm.base_url == "http://h:8000/v1"
    assert config.templatize.llm.backend == "llama_cpp"
    bad = tmp_path / "bad.toml"
    bad.write_text('[templatize.llm]\nbackend = "openai"\n')
    with pytest.raises(ConfigError, match=r"\[llm\] table.*templatize"):
        teacher_settings(str(bad), "templatize")
