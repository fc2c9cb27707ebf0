"""Every option of every stage command reaches the config (or the call) as typed.

Each command is invoked with all its options set to non-default values; the library
function it calls is replaced by one that records its arguments and stops the command,
and the executor factory by one that records how it was asked to run.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from fineinstructions.config import Config
from fineinstructions.interface.cli import main


class Intercepted(Exception):
    """Raised by a replaced library function, once it has recorded its call."""


@dataclass
class Call:
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @property
    def config(self) -> Config:
        (config,) = [a for a in self.args if isinstance(a, Config)]
        return config


@dataclass
class Case:
    call: str  # "module:function" the command calls
    arguments: list[str]  # positional command-line arguments (relative to tmp_path)
    options: dict[str, list[str]]  # every option -> the words after it ([] for a flag)
    config: dict[str, Any]  # dotted config path -> expected value (with its type)
    positional: list[Any]  # expected positional arguments of the call, besides the config
    keywords: dict[str, Any] = field(default_factory=dict)  # expected keyword arguments


# Options every stage command takes: where configuration comes from, and the executor.
CONFIG_OPTIONS = {
    "--preset": ["paper"],
    "--config": ["settings.yaml"],
    "--set": ["templatize.prompt=yes"],
}
CONFIG_EXPECTED = {
    "templatize.mode": "fineinstructions",  # from the paper preset
    "embed.window_overlap": 9,  # from settings.yaml
    "templatize.prompt": "yes",  # --set: a text field takes the value as written
}
EXECUTOR_OPTIONS = {"--executor": ["ray"], "--ray-address": ["ray://head:10001"]}

CASES = {
    "templatize": Case(
        call="fineinstructions.execution.templatize:run_templatize",
        arguments=["queries.jsonl"],
        options={
            "--output": ["out"],
            "--protected": ["protected.jsonl"],
            "--protected-field": ["prompt"],
            "--ngram": ["7"],
            "--near-dup-threshold": ["0.5"],
            "--moderation": ["off"],
            "--mode": ["prompted"],
            "--limit": ["3"],
            "--overwrite": [],
            "--quiet": [],
            "--text-field": ["question"],
            "--id-field": ["qid"],
            "--source-field": ["origin"],
            "--messages-field": ["chat"],
            "--on-error": ["skip"],
            "--output-format": ["jsonl"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={
            "queries.protected": ("protected.jsonl",),
            "queries.protected_text_field": "prompt",
            "queries.decontamination_ngram": 7,
            "queries.near_dedup_threshold": 0.5,
            "queries.moderation": "off",
            "templatize.mode": "prompted",
            "input.queries.text_field": "question",
            "input.queries.id_field": "qid",
            "input.queries.source_field": "origin",
            "input.queries.messages_field": "chat",
            "input.documents.text_field": "text",  # a query command leaves documents alone
            "input.on_error": "skip",
            "output.format": "jsonl",
        },
        positional=[("queries.jsonl",), "out"],
        keywords={"overwrite": True, "limit": 3, "show_progress": False},
    ),
    "index": Case(
        call="fineinstructions.execution.index:run_index",
        arguments=["bank"],
        options={
            "--output": ["out"],
            "--kind": ["ivfpq"],
            "--nlist": ["12"],
            "--nprobe": ["5"],
            "--overwrite": [],
            "--quiet": [],
            "--template-field": ["instruction_template"],
            "--description-field": ["document_type"],
            "--id-field": ["template_uid"],
            "--query-field": ["source_query"],
            "--on-error": ["skip"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={
            "index.kind": "ivfpq", "index.nlist": 12, "index.nprobe": 5,
            "input.templates.template_field": "instruction_template",
            "input.templates.description_field": "document_type",
            "input.templates.id_field": "template_uid",
            "input.templates.query_field": "source_query",
            "input.on_error": "skip",
            "input.documents.id_field": "id",  # the bank's id field is its own
        },
        positional=[("bank",), "out"],
        keywords={"overwrite": True, "show_progress": False},
    ),
    "match": Case(
        call="fineinstructions.execution.match:run_match",
        arguments=["documents.jsonl"],
        options={
            "--index": ["index"],
            "--output": ["out"],
            "--threshold": ["0.5"],
            "--num-chunks": ["2"],
            "--complexity-distribution": ["uniform"],
            "--seed": ["4"],
            "--nprobe": ["6"],
            "--limit": ["9"],
            "--overwrite": [],
            "--quiet": [],
            "--text-field": ["body"],
            "--id-field": ["url"],
            "--source-field": ["site"],
            "--on-error": ["skip"],
            "--output-format": ["jsonl"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={
            "match.threshold": 0.5,
            "embed.num_chunks": 2,
            "match.complexity_distribution": "uniform",
            "match.seed": 4,
            "index.nprobe": 6,
            "input.documents.text_field": "body",
            "input.documents.id_field": "url",
            "input.documents.source_field": "site",
            "input.queries.text_field": "text",  # a document command leaves queries alone
            "input.on_error": "skip",
            "output.format": "jsonl",
        },
        positional=[("documents.jsonl",), "index", "out"],
        keywords={"overwrite": True, "limit": 9, "show_progress": False},
    ),
    "instantiate": Case(
        call="fineinstructions.execution.instantiate:run_instantiate",
        arguments=["matches"],
        options={
            "--templates": ["bank"],
            "--documents": ["documents.jsonl"],
            "--output": ["out"],
            "--mode": ["fineinstructions"],
            "--constraint": ["schema"],
            "--min-excerpt-ratio": ["0.25"],
            "--overwrite": [],
            "--quiet": [],
            "--text-field": ["body"],
            "--id-field": ["url"],
            "--source-field": ["site"],
            "--on-error": ["skip"],
            "--output-format": ["jsonl"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={
            "instantiate.mode": "fineinstructions",
            "instantiate.constraint": "schema",
            "instantiate.min_excerpt_ratio": 0.25,
            "input.documents.text_field": "body",
            "input.documents.id_field": "url",
            "input.documents.source_field": "site",
            "input.on_error": "skip",
            "output.format": "jsonl",
        },
        positional=[("matches",), ("bank",), ("documents.jsonl",), "out"],
        keywords={"overwrite": True, "show_progress": False},
    ),
    "judge": Case(
        call="fineinstructions.execution.judge:run_judge",
        arguments=["pairs"],
        options={
            "--output": ["out"],
            "--min-score": ["2"],
            "--min-relevance": ["0.3"],
            "--format": ["prompted"],
            "--overwrite": [],
            "--quiet": [],
            "--output-format": ["jsonl"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={"judge.min_score": 2.0, "judge.min_relevance": 0.3, "judge.format": "prompted", "output.format": "jsonl"},
        positional=[("pairs",), "out"],
        keywords={"overwrite": True, "show_progress": False},
    ),
    "pack": Case(
        call="fineinstructions.execution.pack:run_pack",
        arguments=["pairs"],
        options={
            "--documents": ["documents.jsonl"],
            "--output": ["out"],
            "--tokenizer": ["no"],
            "--seed": ["5"],
            "--overwrite": [],
            "--quiet": [],
            "--text-field": ["body"],
            "--id-field": ["url"],
            "--source-field": ["site"],
            "--on-error": ["skip"],
            "--output-format": ["jsonl"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={
            "pack.tokenizer": "no",
            "pack.seed": 5,
            "input.documents.text_field": "body",
            "input.documents.id_field": "url",
            "input.documents.source_field": "site",
            "input.on_error": "skip",
            "output.format": "jsonl",
        },
        positional=[("pairs",), ("documents.jsonl",), "out"],
        keywords={"overwrite": True},
    ),
    "run": Case(
        call="fineinstructions.execution.pipeline:run_pipeline",
        arguments=[],
        options={
            "--queries": ["queries.jsonl"],
            "--templates": ["bank"],
            "--documents": ["documents.jsonl"],
            "--output": ["out"],
            "--overwrite": [],
            "--no-report": [],
            "--no-audit": [],
            "--template-field": ["instruction_template"],
            "--description-field": ["document_type"],
            "--template-id-field": ["template_uid"],
            "--template-query-field": ["source_query"],
            "--quiet": [],
            # The shorthands for both kinds lose to the specific options below.
            "--text-field": ["ignored"],
            "--id-field": ["ignored"],
            "--source-field": ["ignored"],
            "--query-text-field": ["question"],
            "--query-id-field": ["qid"],
            "--query-source-field": ["origin"],
            "--messages-field": ["chat"],
            "--document-text-field": ["body"],
            "--document-id-field": ["url"],
            "--document-source-field": ["site"],
            "--on-error": ["skip"],
            "--output-format": ["jsonl"],
            **EXECUTOR_OPTIONS,
            **CONFIG_OPTIONS,
        },
        config={
            "input.queries.text_field": "question",
            "input.queries.id_field": "qid",
            "input.queries.source_field": "origin",
            "input.queries.messages_field": "chat",
            "input.documents.text_field": "body",
            "input.documents.id_field": "url",
            "input.documents.source_field": "site",
            "input.templates.template_field": "instruction_template",
            "input.templates.description_field": "document_type",
            "input.templates.id_field": "template_uid",
            "input.templates.query_field": "source_query",
            "input.on_error": "skip",
            "output.format": "jsonl",
        },
        positional=[("queries.jsonl",), ("documents.jsonl",), "out"],
        keywords={"overwrite": True, "report": None, "audit": None, "show_progress": False, "templates": ("bank",)},
    ),
    "audit": Case(
        call="fineinstructions.experiments.audit:run_audit",
        arguments=["pairs"],
        options={
            "--documents": ["documents.jsonl"],
            "--protected": ["protected.jsonl"],
            "--output": ["audit.json"],
            "--min-score": ["3.5"],
            "--min-excerpt-ratio": ["0.7"],
            "--min-relevance": ["0.3"],
            "--examples": ["9"],
            "--no-relevance": [],
            "--quiet": [],
            **CONFIG_OPTIONS,
        },
        config={},
        positional=["pairs", ("documents.jsonl",)],
        keywords={"protected": ("protected.jsonl",), "output": "audit.json", "min_score": 3.5, "min_excerpt_ratio": 0.7,
                  "min_relevance": 0.3, "examples": 9, "relevance": False},
    ),
    "demo": Case(
        call="fineinstructions.interface.demo:run_demo",
        arguments=[],
        options={"--output": ["out"], "--overwrite": [], "--quiet": [], **CONFIG_OPTIONS},
        config={},
        positional=["out"],
        keywords={"overwrite": True, "show_progress": False},
    ),
}


def config_value(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder holding every input the commands name, as the current directory."""
    monkeypatch.chdir(tmp_path)
    Path("queries.jsonl").write_text(
        json.dumps({"qid": "q1", "question": "how do I bake bread", "origin": "forum", "text": "wrong field"}) + "\n"
    )
    Path("documents.jsonl").write_text(
        json.dumps({"url": "d1", "body": "Bread needs flour, water and time.", "site": "wiki", "text": "wrong"}) + "\n"
    )
    Path("protected.jsonl").write_text(json.dumps({"prompt": "what is 2+2"}) + "\n")
    Path("settings.yaml").write_text("embed:\n  window_overlap: 9\n")
    for folder in ("bank", "index", "matches", "pairs"):
        Path(folder).mkdir()
    return tmp_path


@pytest.fixture
def intercept(monkeypatch):
    """Replace a "module:function" by a recorder; returns the list its calls go to."""

    def replace(target: str) -> list[Call]:
        module_name, function = target.split(":")
        calls: list[Call] = []

        def record(*args, **kwargs):
            calls.append(Call(args, kwargs))
            raise Intercepted

        if module_name.startswith("fineinstructions.execution."):
            # A stand-in module: the test needs none of the real one's imports.
            stand_in = types.ModuleType(module_name)
            setattr(stand_in, function, record)
            monkeypatch.setitem(sys.modules, module_name, stand_in)
        else:
            monkeypatch.setattr(f"{module_name}.{function}", record)
        return calls

    return replace


@pytest.fixture
def executors(monkeypatch):
    """Replace the executor factory by a recorder of how it was asked to run."""
    made: list[dict] = []

    class NoExecutor:
        def close(self) -> None:
            pass

    def make_executor(kind, ray, *, address=None):
        made.append({"kind": kind, "ray": ray, "address": address})
        return NoExecutor()

    monkeypatch.setattr("fineinstructions.execution.executor.make_executor", make_executor)
    return made


def command_line(name: str, case: Case) -> list[str]:
    words = [name, *case.arguments]
    for option, values in case.options.items():
        words += [option, *values]
    return words


@pytest.mark.parametrize("name", list(CASES))
def test_the_case_sets_every_option_of_the_command(name):
    params = [p for p in main.commands[name].params if isinstance(p, click.Option)]
    long_names = {next(o for o in p.opts if o.startswith("--")) for p in params}
    assert long_names == set(CASES[name].options), "options added or removed: update CASES"


@pytest.mark.parametrize("name", list(CASES))
def test_every_option_arrives(name, workspace, intercept, executors):
    case = CASES[name]
    calls = intercept(case.call)
    result = CliRunner().invoke(main, command_line(name, case))
    assert isinstance(result.exception, Intercepted), result.output
    (call,) = calls
    config = call.config
    for dotted, expected in {**CONFIG_EXPECTED, **case.config}.items():
        value = config_value(config, dotted)
        assert value == expected and type(value) is type(expected), (dotted, value)
    assert [a for a in call.args if not isinstance(a, Config)] == case.positional
    for keyword, expected in case.keywords.items():
        assert call.kwargs[keyword] == expected, keyword
    if "--executor" in case.options:
        assert executors == [{"kind": "ray", "ray": config.ray, "address": "ray://head:10001"}]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--moderation", "off"], "off"),
        (["--set", "queries.moderation=off"], "off"),
        (["--moderation", "openai", "--set", "queries.moderation=off"], "openai"),  # the option wins
    ],
)
def test_moderation_off_reaches_the_config(args, expected, workspace, intercept, executors):
    calls = intercept(CASES["templatize"].call)
    result = CliRunner().invoke(main, ["templatize", "queries.jsonl", "-o", "out", *args])
    assert isinstance(result.exception, Intercepted), result.output
    assert calls[0].config.queries.moderation == expected


def test_run_reads_queries_and_documents_with_their_own_fields(workspace, intercept, executors):
    from fineinstructions.io.readers import read_documents, read_queries

    calls = intercept(CASES["run"].call)
    result = CliRunner().invoke(main, command_line("run", CASES["run"]))
    assert isinstance(result.exception, Intercepted), result.output
    queries_paths, documents_paths, _ = calls[0].args[:3]
    fields = calls[0].config.input
    (query,) = read_queries(queries_paths, fields=fields.query_fields())
    (document,) = read_documents(documents_paths, fields=fields.document_fields())
    assert (query.id, query.text, query.source) == ("q1", "how do I bake bread", "forum")
    assert (document.id, document.text, document.source) == ("d1", "Bread needs flour, water and time.", "wiki")


def test_run_text_field_sets_both_kinds(workspace, intercept, executors):
    calls = intercept(CASES["run"].call)
    result = CliRunner().invoke(
        main,
        ["run", "--queries", "queries.jsonl", "--documents", "documents.jsonl", "-o", "out",
         "--text-field", "body", "--id-field", "url", "--document-id-field", "key"],
    )
    assert isinstance(result.exception, Intercepted), result.output
    fields = calls[0].config.input
    assert (fields.queries.text_field, fields.documents.text_field) == ("body", "body")
    assert (fields.queries.id_field, fields.documents.id_field) == ("url", "key")  # the specific option wins
