"""``--overwrite`` deletes only what fineinstructions wrote, and no command writes into a
folder that holds one of its own inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fineinstructions.errors import UserError
from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.outputs import (
    INDEX_FOLDER,
    STAGE_FOLDER,
    clear,
    refuse_inputs_inside,
    run_folder,
)
from fineinstructions.execution.pipeline import STAGES, _prepare
from fineinstructions.interface.cli import main

QUERY = {"text": "how do I repot a cactus without getting pricked?"}
DOCUMENT = {"text": "Repotting a cactus: wrap it in folded newspaper first, then lift it by the paper."}


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_templatize_refuses_an_output_folder_that_holds_its_input(tmp_path):
    queries = write(tmp_path / "q.jsonl", json.dumps(QUERY) + "\n")
    result = CliRunner().invoke(main, ["templatize", str(queries), "-o", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "holds" in result.output and "an input of this job" in result.output and "fix:" in result.output
    assert queries.read_text() == json.dumps(QUERY) + "\n"


def test_run_refuses_an_output_folder_that_holds_its_inputs_and_deletes_nothing(tmp_path):
    queries = write(tmp_path / "q.jsonl", json.dumps(QUERY) + "\n")
    documents = write(tmp_path / "d.jsonl", json.dumps(DOCUMENT) + "\n")
    notes = write(tmp_path / "notes.jsonl", '{"mine": true}\n')
    result = CliRunner().invoke(main, ["run", "--queries", str(queries), "--documents", str(documents),
                                       "-o", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "an input of this job" in result.output
    assert entries(tmp_path) == {"q.jsonl", "d.jsonl", "notes.jsonl"}
    assert notes.read_text() == '{"mine": true}\n'


def test_an_output_folder_inside_no_input_is_accepted(tmp_path):
    refuse_inputs_inside(tmp_path / "out", [tmp_path / "q.jsonl", tmp_path / "other" / "d.jsonl", "hf://datasets/x"])
    with pytest.raises(UserError, match="an input of this job"):
        refuse_inputs_inside(tmp_path, [tmp_path / "data" / "d.jsonl"])
    with pytest.raises(UserError, match="an input of this job"):
        refuse_inputs_inside(tmp_path / "bank", [tmp_path / "bank"])


def test_overwrite_of_a_run_folder_removes_what_the_run_wrote_and_keeps_the_rest(tmp_path):
    out = tmp_path / "run"
    for name in ("run.json", "stats.json", "report.html", "templates.cache.sqlite", "pairs.cache.sqlite-wal",
                 "judged.rejects.jsonl", "templates/part-00000.parquet", "dataset/README.md", "pairs.cache.d/w.sqlite"):
        write(out / name)
    notes = write(out / "notes.jsonl", "mine\n")
    write(out / "my-data" / "queries.jsonl")
    logged = []
    clear(out, run_folder(STAGES), log=logged.append)
    assert entries(out) == {"notes.jsonl", "my-data"}
    assert notes.read_text() == "mine\n"
    assert "kept" in logged[0] and "notes.jsonl" in logged[0] and "my-data" in logged[0]


def test_overwrite_of_a_folder_no_run_wrote_deletes_nothing(tmp_path):
    out = tmp_path / "theirs"
    for name in ("stats.json", "templates/part-00000.parquet", "notes.jsonl", "cache.sqlite"):
        write(out / name)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    _prepare(out, {"queries": [], "templates": [], "documents": [], "config_sha256": "x"}, True, lambda m: None)
    after = sorted(p.relative_to(out) for p in out.rglob("*") if p.name != "run.json")
    assert after == before


def test_overwrite_of_a_stage_folder_keeps_a_users_file_and_refuses_a_users_data_file(tmp_path):
    out = tmp_path / "matches"
    for name in (".shards/run.json", ".shards/00000.json", "part-00000.parquet", "stats.json", ".part-00001.parquet.tmp"):
        write(out / name, "{}")
    write(out / "notes.txt", "mine")
    ShardFolder(out).prepare({"stage": "match"}, overwrite=True)
    assert entries(out) == {"notes.txt", ".shards"}  # .shards made again, empty
    assert not any((out / ".shards").iterdir())

    write(out / "mine.parquet", "not ours")
    with pytest.raises(UserError, match="did not write") as caught:
        ShardFolder(out).prepare({"stage": "match"}, overwrite=True)
    assert "fix:" in str(caught.value)
    assert (out / "mine.parquet").read_text() == "not ours"


def test_layouts_name_what_each_command_writes():
    assert STAGE_FOLDER.owns("part-00012.parquet") and STAGE_FOLDER.owns("part-00012.jsonl")
    assert not STAGE_FOLDER.owns("part-1.parquet") and not STAGE_FOLDER.owns("queries.jsonl")
    assert INDEX_FOLDER.owns("index.faiss") and not INDEX_FOLDER.owns("bank.parquet")
