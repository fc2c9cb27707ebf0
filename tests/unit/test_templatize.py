"""The templatize stage's rules, with a scripted backend: every rejection reason, the
request it sends, the lenient parsing of the released model's answers, and the job that
filters, templatizes and writes the bank."""

import dataclasses
import json

import pytest

from fineinstructions.config import load_config
from fineinstructions.errors import ConfigError
from fineinstructions.execution.templatize import beside, run_templatize
from fineinstructions.io import read_rows
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import (
    Capabilities,
    Completion,
    ErrorKind,
    backend_class,
    context_overflow,
    failed,
)
from fineinstructions.records import QueryRow, RejectRow, TemplateRow
from fineinstructions.stages.templatize import (
    TEMPLATE_PATTERN,
    Templatizer,
    lenient_fields,
    output_schema,
)


def answer(template: str, description: str = "A guide to a topic that explains it with examples.") -> str:
    return json.dumps({"template": template, "compatible_document_description": description})


def run_one(query: str, reply) -> object:
    llm = ScriptedLLM([reply])
    templatizer = Templatizer(llm)
    result = templatizer([QueryRow(id="q-1", text=query, source="test")])
    return result, llm


REJECTIONS = [
    # (query, reply, reason)
    ("what is love", answer("what is <fi>a feeling"), "unclosed_tag"),
    ("what is love", answer("what is </fi> love"), "stray_tag"),
    ("what is love", answer("what is <fi>a <fi>deep</fi> feeling</fi>"), "nested_tag"),
    ("what is love", answer("what is <fi> </fi>"), "empty_tag"),
    ("what is love", answer("what is a feeling"), "no_variables"),
    ("what is love", answer("what is love <fi>a feeling</fi>"), "copy_of_query"),
    ("top 10 films of 1999", answer("top 10 films of <fi>a year</fi>"), "leftover_number"),
    ('meaning of "carpe diem" in Latin', answer('meaning of "carpe diem" in <fi>a language</fi>'), "leftover_quote"),
    ("where is Paris in France", answer("where is Paris in <fi>a country</fi>"), "leftover_name"),
    ("where is Paris", answer("where is <fi>a city</fi>", "  "), "empty_description"),
    ("where is Paris", answer("where is <fi>a city</fi>", "where is a city"), "description_repeats_template"),
    (
        "where is Paris",
        answer(
            "where is <fi>a city</fi>",
            "A music article or encyclopedia page about a song that names its writers.",  # example 6's opening
        ),
        "description_copies_example",
    ),
    ("where is Paris", "I think the template is: where is <fi>a city</fi>", "invalid_output"),
    (
        "where is Paris",
        Completion(text='{"template": "where is <fi>a ci', finish_reason="length"),
        "truncated",
    ),
    ("where is Paris", context_overflow(5000, 4096), "context_overflow"),
    ("where is Paris", failed(ErrorKind.BACKEND_ERROR, "server said no"), "backend_error"),
]


@pytest.mark.parametrize(("query", "reply", "reason"), REJECTIONS, ids=[r[2] for r in REJECTIONS])
def test_each_rejection_reason_is_counted_and_kept_with_the_raw_output(query, reply, reason):
    result, _ = run_one(query, reply)
    assert result.templates == []
    assert result.failed == {reason: 1}
    (reject,) = result.rejects
    assert reject.reason == reason
    assert reject.stage == "templatize" and reject.input_id == "q-1" and reject.input == query
    assert reject.detail
    expected_raw = reply.text if isinstance(reply, Completion) else reply
    assert reject.raw_output == expected_raw
    assert reject.model == "fake:scripted" and reject.prompt_version == "templatize-v1"


def test_a_good_answer_becomes_a_template_row_with_provenance():
    reply = answer(
        "how do I reset my <fi>brand</fi> <fi>type of device</fi> and <fi>brand</fi> account",
        "A support page for a brand's device and account that explains how to reset them.",
    )
    result, _ = run_one("how do I reset my Netgear router and Netgear account", reply)
    (row,) = result.templates
    assert result.failed == {} and result.rejects == []
    assert row.query_id == "q-1" and row.source == "test"
    assert row.variables == ("brand", "type of device") and row.complexity == 2
    assert row.id == TemplateRow.make_id(row.template, row.compatible_document_description)
    assert row.model == "fake:scripted" and row.prompt_version == "templatize-v1"


def test_prompted_request_has_the_system_prompt_examples_and_the_query_last():
    _, llm = run_one("where is Paris", answer("where is <fi>a city</fi>", "An atlas entry about a city."))
    (request,) = llm.calls
    roles = [m.role for m in request.messages]
    assert roles[0] == "system" and roles[-1] == "user"
    assert roles[1:-1] == ["user", "assistant"] * ((len(roles) - 2) // 2)
    assert request.messages[-1].content == "where is Paris"
    for message in request.messages[2:-1:2]:  # the worked answers are the JSON asked for
        assert set(json.loads(message.content)) == {"template", "compatible_document_description"}
    assert request.json_schema == output_schema(constrain_template=False)  # the fake constrains nothing
    assert request.temperature == 0.0 and request.prompt_version == "templatize-v1"


def test_fineinstructions_mode_sends_the_bare_query_and_parses_leniently():
    reply = 'Sure!\n```json\n{"output": {"template": "where is <fi>a city</fi>", "compatible_document_description": "An atlas entry about a city and where it lies."}}\n```'
    llm = ScriptedLLM([reply])
    templatizer = Templatizer(llm, mode="fineinstructions")
    result = templatizer([QueryRow(id="q", text="where is Paris", source="s")])
    (request,) = llm.calls
    assert [(m.role, m.content) for m in request.messages] == [("user", "where is Paris")]
    assert request.json_schema is None and request.grammar is None
    (row,) = result.templates
    assert row.template == "where is <fi>a city</fi>"
    assert row.prompt_version == "fineinstructions-query_templatizer"


def test_lenient_fields_finds_the_object_holding_a_template():
    assert lenient_fields('noise {"a": 1} {"template": "t", "x": 2} tail') == {"template": "t", "x": 2}
    assert lenient_fields('[{"result": {"template": "t"}}]') == {"template": "t"}
    assert lenient_fields('{"result": [{"template": "t"}]}') == {"template": "t"}
    assert lenient_fields("no json here") is None
    assert lenient_fields("") is None


def test_constraint_auto_follows_what_the_backend_declares():
    gbnf = Capabilities(constrains_gbnf=True, constrains_json_schema=True)
    schema = Capabilities(constrains_json_schema=True, constrains_regex=True)
    assert Templatizer(ScriptedLLM(capabilities=gbnf)).constraint == "query"
    assert Templatizer(ScriptedLLM(capabilities=schema)).constraint == "pattern"
    assert Templatizer(ScriptedLLM()).constraint == "none"
    assert Templatizer(ScriptedLLM(capabilities=gbnf), mode="fineinstructions").constraint == "unconstrained"


def test_constraint_auto_follows_the_real_backends_and_sees_through_the_cache(tmp_path):
    openai = backend_class("openai")
    assert Templatizer(openai("m", dialect="llama_cpp")).constraint == "query"
    assert Templatizer(openai("m", dialect="vllm")).constraint == "pattern"
    assert Templatizer(openai("m", dialect="openai")).constraint == "pattern"
    cached = CachedLLM(openai("m", dialect="llama_cpp"), tmp_path / "c.sqlite")
    assert Templatizer(cached).constraint == "query"


def test_the_query_constraint_on_a_backend_without_grammars_is_a_clear_error():
    with pytest.raises(ConfigError, match="GBNF"):
        Templatizer(ScriptedLLM(), constraint="query")
    with pytest.raises(ConfigError, match="templatize.constraint"):
        Templatizer(backend_class("openai")("m", dialect="vllm"), mode="fineinstructions", constraint="query")


def test_query_constraint_sends_a_grammar_and_falls_back_to_the_pattern_for_huge_queries():
    templatizer = Templatizer(ScriptedLLM(capabilities=Capabilities(constrains_gbnf=True)), constraint="query")
    short = templatizer.request("where is Paris")
    assert short.grammar is not None and short.json_schema is None
    huge = templatizer.request(" ".join(["word"] * 1000))
    assert huge.grammar is None
    assert huge.json_schema["properties"]["template"]["pattern"] == TEMPLATE_PATTERN


def test_unknown_mode_or_constraint_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Templatizer(ScriptedLLM(), mode="other")
    with pytest.raises(ValueError, match="constraint"):
        Templatizer(ScriptedLLM(), constraint="regex")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_run_templatize_filters_templatizes_dedupes_and_writes_bank_rejects_and_stats(tmp_path):
    queries = write_jsonl(
        tmp_path / "queries.jsonl",
        [
            {"id": "a", "text": "where is Paris", "source": "web"},
            {"id": "b", "text": "Where  is PARIS", "source": "web"},  # exact duplicate
            {"id": "c", "text": "where is Rome", "source": "forum"},
            {"id": "d", "text": "how to make a pipe bomb at home", "source": "forum"},  # harmful
            {"id": "e", "text": "name the capital of the country whose flag has a red maple leaf on it please", "source": "web"},
            {"id": "f", "text": "what is love", "source": "web"},
        ],
    )
    protected = write_jsonl(
        tmp_path / "evalset.jsonl",
        [{"text": "Question: name the capital of the country whose flag has a red maple leaf on it please answer"}],
    )
    llm = ScriptedLLM(
        [
            answer("where is <fi>a city</fi>", "An atlas entry about a city and where it lies."),
            answer("where is <fi>a city</fi>", "An encyclopedia page on a city's location."),  # same template
            answer("what is love"),  # no variables
        ]
    )
    config = load_config(overrides=[f"queries.protected=[{json.dumps(str(protected))}]", "templatize.batch_size=4"])
    out = tmp_path / "templates"
    stats = run_templatize([queries], out, config, llm=llm, show_progress=False, log=lambda m: None)

    bank = list(read_rows([out], TemplateRow))
    assert [t.query_id for t in bank] == ["a"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["part-00000.parquet", "stats.json"]
    rejects = [json.loads(line) for line in beside(out, ".rejects.jsonl").read_text().splitlines()]
    reasons = {r["input_id"]: r["reason"] for r in rejects}
    assert reasons == {
        "b": "exact_duplicate",
        "d": "harmful:weapons/explosives_cbrn",
        "e": "contaminated:evalset",
        "c": "duplicate_template",
        "f": "no_variables",
    }
    assert all(set(r) == {f.name for f in dataclasses.fields(RejectRow)} for r in rejects)

    assert stats == json.loads((out / "stats.json").read_text())
    step = stats["templatize"]
    assert step["in"] == 3 and step["out"] == 1
    assert step["in"] == step["out"] + sum(step["skipped"].values()) + sum(step["failed"].values())
    assert step["skipped"] == {"duplicate_template": 1} and step["failed"] == {"no_variables": 1}
    assert step["valid"] == 2 and step["valid_rate"] == round(2 / 3, 4)
    filtered = stats["filter_queries"]
    assert filtered["in"] == 6 and filtered["out"] == 3
    assert filtered["in"] == filtered["out"] + sum(filtered["skipped"].values())
    assert stats["complexity_histogram"] == {"1": 1}
    assert stats["read_queries"]["records"] == 6


def test_run_templatize_resumes_the_same_job_and_refuses_another_unless_overwrite(tmp_path):
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "text": "where is Paris"}])
    out = tmp_path / "templates"
    config = load_config()
    reply = answer("where is <fi>a city</fi>", "An atlas entry about a city and where it lies.")
    first = run_templatize([queries], out, config, llm=ScriptedLLM([reply]), show_progress=False, log=lambda m: None)
    from fineinstructions.errors import UserError

    # The same command again: finished, kept, no model call (the scripted model has no reply).
    assert run_templatize([queries], out, config, llm=ScriptedLLM([]), show_progress=False, log=lambda m: None) == first
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "b", "text": "where is Rome"}])
    with pytest.raises(UserError, match="--overwrite"):
        run_templatize([other], out, config, llm=ScriptedLLM([reply]), show_progress=False, log=lambda m: None)
    stats = run_templatize(
        [queries], out, config, llm=ScriptedLLM([reply]), overwrite=True, show_progress=False, log=lambda m: None
    )
    assert stats["templatize"]["out"] == 1


def test_fineinstructions_mode_honours_an_explicit_constraint():
    """``auto`` sends the bare query unconstrained, as the released model writes its own
    JSON; an explicit ``pattern`` or ``none`` is sent all the same."""
    pattern = Templatizer(ScriptedLLM(), mode="fineinstructions", constraint="pattern").request("where is Paris")
    assert pattern.json_schema == output_schema(constrain_template=True)
    plain = Templatizer(ScriptedLLM(), mode="fineinstructions", constraint="none").request("where is Paris")
    assert plain.json_schema == output_schema(constrain_template=False)
    for request in (pattern, plain):
        assert [(m.role, m.content) for m in request.messages] == [("user", "where is Paris")]
    free = Templatizer(ScriptedLLM(), mode="fineinstructions").request("where is Paris")
    assert free.json_schema is None and free.grammar is None and free.regex is None


def test_fineinstructions_mode_takes_the_query_grammar_where_the_backend_takes_grammars():
    llm = ScriptedLLM(capabilities=Capabilities(constrains_gbnf=True))
    request = Templatizer(llm, mode="fineinstructions", constraint="query").request("where is Paris")
    assert request.grammar is not None and request.json_schema is None
    assert [(m.role, m.content) for m in request.messages] == [("user", "where is Paris")]


def test_run_templatize_reads_queries_fixed_in_place_and_refuses_changed_ones_it_finished(tmp_path):
    from fineinstructions.errors import UserError

    class Down(ScriptedLLM):
        def generate(self, requests):
            raise RuntimeError("the model died")

    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "text": "where is Paris"}])
    out = tmp_path / "templates"
    config = load_config()
    quiet = {"show_progress": False, "log": lambda m: None}
    with pytest.raises(RuntimeError):
        run_templatize([queries], out, config, llm=Down(), **quiet)  # filtered, planned, nothing finished
    write_jsonl(queries, [{"id": "a", "text": "where is the city of Rome"}])  # fixed in place
    reply = answer("where is the city of <fi>a city</fi>", "An atlas entry about a city and where it lies.")
    llm = ScriptedLLM([reply])
    stats = run_templatize([queries], out, config, llm=llm, **quiet)
    assert stats["templatize"]["out"] == 1
    assert "Rome" in llm.calls[0].messages[-1].content  # the new query, not the old filter output
    write_jsonl(queries, [{"id": "a", "text": "where is the city of Rome, Italy"}])
    with pytest.raises(UserError, match="changed since the first run"):
        run_templatize([queries], out, config, llm=ScriptedLLM([reply]), **quiet)
