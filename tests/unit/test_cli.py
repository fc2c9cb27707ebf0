"""The command line: help, lazy imports, config, pack and the errors of run and report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main
from fineinstructions.io import ShardWriter, read_rows
from fineinstructions.records import PairRow, QueryRow

PIPELINE = ["templatize", "index", "match", "instantiate", "judge", "pack", "run", "audit", "export", "pretrain", "evaluate", "experiment", "distill", "train", "calibrate", "demo", "report"]
HEAVY = ["torch", "llama_cpp", "vllm", "transformers", "pyarrow"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def fineinstructions_executable() -> str:
    return str(Path(sys.executable).with_name("fineinstructions"))


# ---------------------------------------------------------------- help and imports


def command_entries(help_text: str) -> dict[str, str]:
    """The Commands section of a help text: name -> description (wrapped lines joined)."""
    section = help_text.split("\nCommands:\n", 1)[1]
    entries: dict[str, str] = {}
    last = None
    for line in section.splitlines():
        match = re.match(r"^  (\S+)\s{2,}(\S.*)$", line)
        if match:
            last = match.group(1)
            entries[last] = match.group(2).strip()
        elif line.strip() and last:
            entries[last] += " " + line.strip()
    return entries


def test_help_in_a_subprocess_lists_every_command_with_a_description():
    result = subprocess.run(
        [fineinstructions_executable(), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    entries = command_entries(result.stdout)
    assert list(entries)[: len(PIPELINE)] == PIPELINE  # pipeline order, not alphabetical
    for name in PIPELINE:
        description = entries[name]
        assert len(description) > 20, (name, description)
        assert "\n" not in main.commands[name].get_short_help_str(limit=200)
    # One line each: no wrapped continuation lines in the Commands section.
    commands_section = result.stdout.split("Commands:", 1)[1].strip("\n").splitlines()
    assert all(line.split()[0] in entries for line in commands_section if line.strip())
    assert "Traceback" not in result.stderr


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "fineinstructions", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert set(PIPELINE) <= set(command_entries(result.stdout))


def test_importing_the_cli_imports_nothing_heavy():
    code = (
        "import sys, json, fineinstructions.interface.cli\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_help_of_every_command_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from fineinstructions.interface.cli import main\n"
        "codes = [CliRunner().invoke(main, [c, '--help']).exit_code for c in main.commands]\n"
        f"print(json.dumps([codes, sorted(m for m in {HEAVY!r} if m in sys.modules)]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    codes, heavy = json.loads(result.stdout)
    assert set(codes) == {0} and heavy == []


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == "fineinstructions, version 0.1.0"


# ---------------------------------------------------------------- run and report errors


def test_report_of_a_folder_without_a_finished_run_says_what_to_give(tmp_path):
    result = invoke("report", str(tmp_path))
    assert result.exit_code == 2
    assert "holds no finished run (no stats.json)" in result.stderr
    assert "fix: give the folder `fineinstructions run` wrote" in result.stderr


def test_run_refuses_a_folder_that_holds_something_else(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"text": "how do I bake bread"}\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("run", "--queries", str(queries), "--documents", str(queries), "-o", str(out))
    assert result.exit_code == 2
    assert "is not empty and holds no run" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- config


def test_config_prints_the_override():
    result = invoke("config", "--preset", "paper", "--set", "match.threshold=0.9")
    assert result.exit_code == 0, result.output
    assert "\nthreshold = 0.9\n" in result.stdout
    assert 'model = "fineinstructions/query_templatizer"' in result.stdout


def test_config_paper_preset_threshold():
    result = invoke("config", "--preset", "paper")
    assert result.exit_code == 0
    assert "\nthreshold = 0.865\n" in result.stdout
    assert 'tokenizer = "meta-llama/Meta-Llama-3-8B"' in result.stdout


def test_config_file_and_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pack:\n  seed: 3\njudge:\n  min_score: 5\n")
    result = invoke("config", "--config", str(path), "--set", "pack.seed=7")
    assert result.exit_code == 0
    assert "\nseed = 7\n" in result.stdout and "\nmin_score = 5.0\n" in result.stdout


def test_config_takes_set_values_as_their_fields_hold_them():
    result = invoke(
        "config", "--set", "queries.moderation=off", "--set", "templatize.prompt=yes",
        "--set", "input.text_field=body", "--set", "input.documents.id_field=url",
        "--set", "judge.llm.backend=openai",
    )
    assert result.exit_code == 0, result.output
    assert '\nmoderation = "off"\n' in result.stdout and '\nprompt = "yes"\n' in result.stdout
    queries = result.stdout.split("[input.queries]\n", 1)[1].split("\n\n", 1)[0]
    documents = result.stdout.split("[input.documents]\n", 1)[1].split("\n\n", 1)[0]
    assert 'text_field = "body"' in queries and 'id_field = "id"' in queries
    assert 'text_field = "body"' in documents and 'id_field = "url"' in documents
    judge_llm = result.stdout.split("[judge.llm]\n", 1)[1].split("\n\n", 1)[0]
    assert 'backend = "openai"' in judge_llm and "# tokenizer = (unset)" in judge_llm


def test_set_help_states_how_values_are_read():
    text = " ".join(invoke("config", "--help").output.split())
    assert "takes VALUE as written (queries.moderation=off" in text
    assert "null unsets one that may be unset" in text and "as YAML" in text


def test_run_help_separates_query_and_document_fields():
    text = invoke("run", "--help").output
    for option in ("--query-text-field", "--query-id-field", "--query-source-field", "--messages-field",
                   "--document-text-field", "--document-id-field", "--document-source-field", "--text-field"):
        assert option in text, option
    assert "--messages-field" not in invoke("match", "--help").output  # documents are not chats


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "match.treshold=0.9"], ["match.treshold: unknown field (did you mean 'threshold'?)"]),
        (["--set", "pack.seed=x"], ["pack.seed"]),
        (["--preset", "nope"], ["unknown preset 'nope'", "embedded, paper"]),
    ],
)
def test_config_errors_are_one_clear_message(args, fragments):
    result = invoke("config", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- pack


def make_pairs(folder: Path, document_ids: list[str]) -> list[PairRow]:
    pairs = [
        PairRow(
            id=f"p-{i}",
            document_id=doc_id,
            template_id=f"t-{i}",
            query_id=f"q-{i}",
            instruction=f"What does document {doc_id} say?",
            answer="It says a few short things.",
            excerpt_ratio=1.0,
            excerpt_spans=((0, 26),),
        )
        for i, doc_id in enumerate(document_ids)
    ]
    with ShardWriter(folder, PairRow) as writer:
        writer.write(pairs)
    return pairs


LONG_TEXT = "This document is long enough to pay for a short pair many times over. " * 20


def test_pack_with_text_field_mapping(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(
        "".join(
            json.dumps({"id": doc_id, "body": LONG_TEXT, "source": "test"}) + "\n"
            for doc_id in ("doc-a", "doc-b")
        )
    )
    pairs = make_pairs(tmp_path / "pairs", ["doc-a", "doc-b"])
    out = tmp_path / "out"
    result = invoke(
        "pack", str(tmp_path / "pairs"), "--documents", str(documents), "--text-field", "body",
        "-o", str(out), "--seed", "3",
    )
    assert result.exit_code == 0, result.output
    assert "pack: kept 2 of 2 pairs from 2 documents" in result.stderr
    kept = list(read_rows([out], PairRow))
    assert sorted(p.id for p in kept) == ["p-0", "p-1"]
    by_id = {p.id: p for p in pairs}
    for row in kept:
        original = by_id[row.id]
        assert row.text == f"Instruction: {original.instruction}\n\nAnswer: {original.answer}"
        assert row.token_count and row.token_count > 5
        assert row.excerpt_spans == ((0, 26),)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["read_documents"] == {"rows": 2, "records": 2, "skipped": {}}
    assert stats["pack"]["in"] == 2 and stats["pack"]["out"] == 2
    assert stats["pack"]["budget_tokens"] > stats["pack"]["kept_tokens"] > 0

    # Without the mapping the same documents fail, naming the missing field.
    again = invoke("pack", str(tmp_path / "pairs"), "--documents", str(documents), "-o", str(tmp_path / "o2"))
    assert again.exit_code == 2
    assert f"{documents}, line 1: field 'text': missing" in again.stderr
    assert "--text-field" in again.stderr


def test_pack_jsonl_output_and_overwrite(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"id": "doc-a", "text": LONG_TEXT}) + "\n")
    make_pairs(tmp_path / "pairs", ["doc-a"])
    out = tmp_path / "out"
    args = ["pack", str(tmp_path / "pairs"), "--documents", str(documents), "-o", str(out), "-q"]
    first = invoke(*args, "--output-format", "jsonl")
    assert first.exit_code == 0, first.output
    assert first.output == ""
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["README.md", "part-00000.jsonl", "stats.json"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    replaced = invoke(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["README.md", "part-00000.parquet", "stats.json"]


def test_pack_bad_documents_file_is_a_clear_error(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text('{"id": "doc-a", "text": "fine"}\n{"id": "doc-b", "text": oops}\n')
    make_pairs(tmp_path / "pairs", ["doc-a"])
    result = invoke("pack", str(tmp_path / "pairs"), "--documents", str(documents), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {documents}, line 2: invalid JSON")
    assert "fix:" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_pack_bad_documents_in_a_real_process_prints_no_traceback(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_bytes(b'{"id": "doc-a", "text": "fine"}\n\n{"id": "doc-b", "text": "caf\xe9"}\n')
    make_pairs(tmp_path / "pairs", ["doc-a"])
    result = subprocess.run(
        [fineinstructions_executable(), "pack", str(tmp_path / "pairs"), "--documents", str(documents),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {documents}, line 3: not valid UTF-8")
    assert "Traceback" not in result.stderr


def test_pack_on_error_skip_keeps_good_documents(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"id": "doc-a", "text": LONG_TEXT}) + "\n{broken\n")
    make_pairs(tmp_path / "pairs", ["doc-a"])
    out = tmp_path / "out"
    result = invoke(
        "pack", str(tmp_path / "pairs"), "--documents", str(documents), "-o", str(out), "--on-error", "skip"
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["read_documents"] == {"rows": 2, "records": 1, "skipped": {"invalid_row": 1}}
    assert [p.id for p in read_rows([out], PairRow)] == ["p-0"]


def test_pack_pairs_that_are_not_pairs_is_a_clear_error(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"id": "doc-a", "text": LONG_TEXT}) + "\n")
    with ShardWriter(tmp_path / "queries", QueryRow) as writer:
        writer.write([QueryRow(id="q", text="t", source="s")])
    result = invoke("pack", str(tmp_path / "queries"), "--documents", str(documents), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "not a PairRow" in result.stderr
    assert "Traceback" not in result.output


def test_pack_pairs_of_unknown_documents_is_a_clear_error(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"id": "doc-a", "text": LONG_TEXT}) + "\n")
    make_pairs(tmp_path / "pairs", ["doc-zzz"])
    result = invoke("pack", str(tmp_path / "pairs"), "--documents", str(documents), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "error: " in result.stderr and "doc-zzz" in result.stderr


def test_a_ray_address_without_the_ray_executor_is_a_clear_error(tmp_path):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"id": "doc-a", "text": LONG_TEXT}) + "\n")
    make_pairs(tmp_path / "pairs", ["doc-a"])
    result = invoke("pack", str(tmp_path / "pairs"), "--documents", str(documents), "-o", str(tmp_path / "out"),
                    "--ray-address", "auto")
    assert result.exit_code == 2
    assert "--ray-address names a Ray cluster" in result.stderr and "fix: add --executor ray" in result.stderr
    assert not (tmp_path / "out").exists()


def test_every_stage_command_takes_the_executor_options():
    for command in ("templatize", "index", "match", "instantiate", "judge", "pack", "run"):
        text = invoke(command, "--help").output
        assert "--executor [local|ray]" in text and "--ray-address ADDRESS" in text, command


def test_run_checks_the_documents_before_any_stage_runs(tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"text": "how do I repot a cactus?"}) + "\n")
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"content": "A page about cacti."}) + "\n")
    out = tmp_path / "run"
    result = invoke("run", "--queries", str(queries), "--documents", str(documents), "-o", str(out),
                    "--set", "templatize.llm.backend=fake")
    assert result.exit_code == 2, result.output
    assert f"{documents}, line 1: field 'text'" in result.output and "--text-field" in result.output
    assert not out.exists()  # nothing ran: not templatize, not index
