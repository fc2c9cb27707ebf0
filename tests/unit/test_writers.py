"""Writers: sharded, atomic Parquet/JSONL output, and rows that round-trip through it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import InputError, UserError
from fineinstructions.io import (
    ShardWriter,
    atomic_write,
    input_files,
    read_rows,
    write_json,
    write_table,
)
from fineinstructions.io.writers import prepare_output_dir
from fineinstructions.records import (
    ROW_TYPES,
    DocumentRow,
    EmbeddedTemplateRow,
    MatchRow,
    PairRow,
    QueryRow,
    RejectRow,
    TemplateRow,
    from_table,
    to_table,
)

SAMPLES = {
    EmbeddedTemplateRow: [
        EmbeddedTemplateRow(id="t-1", content="t-1", query_id="q-1", template="where is <fi>a city</fi>", variables=("a city",),
                            complexity=1, vector=(0.5, -0.25, 1.0)),
    ],
    QueryRow: [
        QueryRow(id="q-1", text="What is 東京?", source="nq"),
        QueryRow(id="q-2", text="emoji 👩‍💻 and \n newline", source="arena"),
        QueryRow(id="q-3", text="third", source="quora"),
    ],
    DocumentRow: [
        DocumentRow(id="d-1", text="A document.", source="c4", token_count=3),
        DocumentRow(id="d-2", text="مرحبا", source="wiki"),  # token_count None
        DocumentRow(id="d-3", text="x" * 10_000, source="c4", token_count=2**40),
    ],
    TemplateRow: [
        TemplateRow(
            id="t-1",
            query_id="q-1",
            source="nq",
            template="What is <fi>city</fi>?",
            compatible_document_description="A text about a city.",
            variables=("city",),
            complexity=1,
            model="SmolLM2",
            prompt_version="v1",
        ),
        TemplateRow(
            id="t-2",
            query_id="q-2",
            source="arena",
            template="No variables here",
            compatible_document_description="Anything.",
            variables=(),
            complexity=0,
            model="SmolLM2",
            prompt_version="v1",
        ),
        TemplateRow(
            id="t-3",
            query_id="q-3",
            source="quora",
            template="<fi>a</fi> vs <fi>b</fi> vs <fi>c</fi>",
            compatible_document_description="A comparison.",
            variables=("a", "b", "c"),
            complexity=3,
            model="m",
            prompt_version="v2",
        ),
    ],
    MatchRow: [
        MatchRow(document_id="d-1", template_id="t-1", chunk=0, score=0.875),
        MatchRow(document_id="d-1", template_id="t-2", chunk=5, score=-0.25),
        MatchRow(document_id="d-2", template_id="t-3", chunk=1, score=1.0),
    ],
    RejectRow: [
        RejectRow(
            stage="templatize",
            input_id="q-1",
            reason="leftover_name",
            detail="the query's name 'Paris' is still in the template",
            input="what is Paris like in spring",
            raw_output='{"template": "what is Paris like in <fi>a season</fi>"}',
            model="m",
            prompt_version="templatize-v1",
        ),
        RejectRow(stage="filter_queries", input_id="q-2", reason="exact_duplicate", detail="", input="hi"),
    ],
    PairRow: [
        PairRow(
            id="p-1",
            document_id="d-1",
            template_id="t-1",
            query_id="q-1",
            instruction="What is Tokyo?",
            answer="Tokyo is the capital of Japan.",
            excerpt_ratio=0.75,
            excerpt_spans=((0, 5), (10, 30)),
            judge_score=5,
            text="Instruction: What is Tokyo?\n\nAnswer: Tokyo is the capital of Japan.",
            token_count=17,
            instantiate_model="im",
            instantiate_prompt_version="iv1",
            judge_model="jm",
            judge_prompt_version="jv1",
        ),
        PairRow(
            id="p-2",
            document_id="d-2",
            template_id="t-2",
            query_id="q-2",
            instruction="Say hi",
            answer="hi",
            excerpt_ratio=1.0,
        ),  # every optional field at its default
        PairRow(
            id="p-3",
            document_id="d-3",
            template_id="t-3",
            query_id="q-3",
            instruction="i",
            answer="a",
            excerpt_ratio=0.5,
            excerpt_spans=((0, 1),),
            judge_score=1,
        ),
    ],
}
ALL_TYPES = pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda t: t.__name__)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def queries(n: int) -> list[QueryRow]:
    return [QueryRow(id=f"q{i}", text=f"query {i}", source="s") for i in range(n)]


# ---------------------------------------------------------------- sharding


def test_shard_writer_splits_by_rows_per_shard(tmp_path):
    rows = queries(5)
    with ShardWriter(tmp_path / "out", QueryRow, rows_per_shard=2) as writer:
        writer.write(rows)
    names = ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert listing(tmp_path / "out") == names
    assert writer.paths == [tmp_path / "out" / n for n in names]
    assert writer.rows_written == 5
    assert [pq.read_table(p).num_rows for p in writer.paths] == [2, 2, 1]
    assert pq.read_table(writer.paths[0]).schema.equals(QueryRow.SCHEMA)
    assert list(read_rows([tmp_path / "out"], QueryRow)) == rows


def test_shard_writer_exact_multiple_writes_no_empty_shard(tmp_path):
    writer = ShardWriter(tmp_path, QueryRow, rows_per_shard=3)
    writer.write(queries(3))
    writer.write(iter(queries(6)[3:]))  # any iterable
    assert writer.close() == [tmp_path / "part-00000.parquet", tmp_path / "part-00001.parquet"]
    assert writer.close() == writer.paths  # closing again writes nothing more
    assert listing(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]


def test_shard_writer_writes_nothing_for_no_rows(tmp_path):
    with ShardWriter(tmp_path / "out", QueryRow) as writer:
        writer.write([])
    assert writer.paths == []
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


def test_shard_writer_prefix_and_start_index(tmp_path):
    with ShardWriter(tmp_path, DocumentRow, rows_per_shard=1, prefix="docs", start_index=41) as writer:
        writer.write(SAMPLES[DocumentRow][:2])
    assert listing(tmp_path) == ["docs-00041.parquet", "docs-00042.parquet"]
    assert writer.next_index == 43


def test_shard_writer_jsonl(tmp_path):
    rows = SAMPLES[PairRow]
    with ShardWriter(tmp_path, PairRow, format="jsonl", rows_per_shard=2) as writer:
        writer.write(rows)
    assert listing(tmp_path) == ["part-00000.jsonl", "part-00001.jsonl"]
    lines = (tmp_path / "part-00000.jsonl").read_text("utf-8").splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 2
    assert first["excerpt_spans"] == [[0, 5], [10, 30]]
    assert first["excerpt_ratio"] == 0.75 and first["judge_score"] == 5
    assert list(read_rows([tmp_path], PairRow)) == rows


def test_jsonl_shards_keep_unicode_unescaped(tmp_path):
    with ShardWriter(tmp_path, QueryRow, format="jsonl") as writer:
        writer.write(SAMPLES[QueryRow])
    assert "東京" in (tmp_path / "part-00000.jsonl").read_text("utf-8")


@pytest.mark.parametrize("kwargs", [{"format": "csv"}, {"rows_per_shard": 0}])
def test_shard_writer_rejects_bad_settings(tmp_path, kwargs):
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, QueryRow, **kwargs)


# ---------------------------------------------------------------- round trips


@ALL_TYPES
def test_to_table_from_table_round_trip(row_type):
    rows = SAMPLES[row_type]
    table = to_table(rows)
    assert table.schema.equals(row_type.SCHEMA)
    assert table.num_rows == len(rows)
    assert from_table(table, row_type) == rows


@ALL_TYPES
def test_to_table_of_no_rows(row_type):
    table = to_table([], row_type)
    assert table.num_rows == 0 and table.schema.equals(row_type.SCHEMA)
    assert from_table(table, row_type) == []


@ALL_TYPES
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_rows_round_trip_through_shards(tmp_path, row_type, fmt):
    rows = SAMPLES[row_type]
    with ShardWriter(tmp_path, row_type, format=fmt, rows_per_shard=2) as writer:
        writer.write(rows)
    back = list(read_rows([tmp_path], row_type))
    assert back == rows
    for row in back:  # tuple fields come back as tuples (rows stay hashable)
        hash(row)
        for value in (getattr(row, name) for name in row_type.SCHEMA.names):
            assert not isinstance(value, list)


def test_write_table_formats(tmp_path):
    table = to_table(SAMPLES[TemplateRow])
    parquet = write_table(table, tmp_path / "t.parquet")
    jsonl = write_table(table, tmp_path / "t.jsonl", "jsonl")
    assert pq.read_table(parquet).equals(table)
    assert list(read_rows([jsonl], TemplateRow)) == SAMPLES[TemplateRow]
    with pytest.raises(ValueError, match="unknown output format"):
        write_table(table, tmp_path / "t.csv", "csv")
    assert listing(tmp_path) == ["t.jsonl", "t.parquet"]


def test_read_rows_of_the_wrong_type_is_an_input_error(tmp_path):
    with ShardWriter(tmp_path / "p", QueryRow) as writer:
        writer.write(queries(2))
    with ShardWriter(tmp_path / "j", QueryRow, format="jsonl") as writer:
        writer.write(queries(2))
    for folder in (tmp_path / "p", tmp_path / "j"):
        with pytest.raises(InputError, match="not a PairRow") as caught:
            list(read_rows([folder], PairRow))
        assert "part-00000" in str(caught.value)


def test_read_rows_of_a_corrupt_parquet_is_an_input_error(tmp_path):
    path = tmp_path / "part-00000.parquet"
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        list(read_rows([path], QueryRow))


def test_write_json(tmp_path):
    data = {"counts": {"in": 3, "out": 2}, "name": "日本"}
    path = write_json(data, tmp_path / "sub" / "stats.json")
    assert json.loads(path.read_text("utf-8")) == data
    assert "日本" in path.read_text("utf-8")
    assert listing(tmp_path / "sub") == ["stats.json"]


# ---------------------------------------------------------------- atomicity


class Boom(Exception):
    pass


def test_atomic_write_failure_leaves_nothing(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        with open(tmp, "w") as handle:
            handle.write("half of the ")
            handle.flush()
        raise Boom("disk on fire")

    with pytest.raises(Boom):
        atomic_write(tmp_path / "out" / "data.jsonl", write)
    assert seen[0].parent == tmp_path / "out" and seen[0].name.startswith(".")
    assert seen[0].name.endswith(".tmp")
    assert listing(tmp_path / "out") == []


def test_atomic_write_failure_keeps_the_previous_file(tmp_path):
    target = tmp_path / "data.jsonl"
    target.write_text("old complete content\n")

    def write(tmp: Path) -> None:
        tmp.write_text("new partial")
        raise KeyboardInterrupt  # BaseException too

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert target.read_text() == "old complete content\n"
    assert listing(tmp_path) == ["data.jsonl"]


def test_atomic_write_failure_before_any_byte(tmp_path):
    def write(tmp: Path) -> None:
        raise Boom

    with pytest.raises(Boom):
        atomic_write(tmp_path / "x.parquet", write)
    assert listing(tmp_path) == []


def test_atomic_write_replaces_and_returns_path(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    assert atomic_write(target, lambda tmp: tmp.write_text("new")) == target
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["x.txt"]


def test_parquet_write_failing_midway_leaves_no_file(tmp_path):
    table = to_table(queries(10))

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, table.schema) as writer:
            writer.write_table(table.slice(0, 5))
            raise Boom("killed between row groups")

    with pytest.raises(Boom):
        atomic_write(tmp_path / "part-00000.parquet", write)
    assert listing(tmp_path) == []


def test_context_manager_exception_writes_no_partial_shard(tmp_path):
    rows = queries(5)
    with pytest.raises(Boom):
        with ShardWriter(tmp_path, QueryRow, rows_per_shard=3) as writer:
            writer.write(rows)  # one full shard of 3 written, 2 rows buffered
            raise Boom
    assert listing(tmp_path) == ["part-00000.parquet"]
    assert list(read_rows([tmp_path], QueryRow)) == rows[:3]
    assert writer.rows_written == 3


def test_unconvertible_row_writes_nothing(tmp_path):
    bad = [QueryRow(id="q", text=123, source="s")]  # text is not a string
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        with ShardWriter(tmp_path, QueryRow) as writer:
            writer.write(bad)
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- output folders


def test_prepare_output_dir_creates_folder(tmp_path):
    target = tmp_path / "a" / "b"
    assert prepare_output_dir(target, overwrite=False) == target
    assert target.is_dir()


def test_prepare_output_dir_refuses_existing_shards(tmp_path):
    with ShardWriter(tmp_path, QueryRow, rows_per_shard=1) as writer:
        writer.write(queries(2))
    with pytest.raises(UserError) as caught:
        prepare_output_dir(tmp_path, overwrite=False)
    message = str(caught.value)
    assert str(tmp_path) in message and "2 file(s)" in message and "--overwrite" in message
    assert listing(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]  # untouched


def test_prepare_output_dir_overwrite_removes_old_shards(tmp_path):
    with ShardWriter(tmp_path, QueryRow, rows_per_shard=1) as writer:
        writer.write(queries(2))
    (tmp_path / "part-00009.jsonl").write_text("{}\n")
    (tmp_path / ".part-00002.parquet.deadbeef.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("keep me")
    assert prepare_output_dir(tmp_path, overwrite=True) == tmp_path
    assert listing(tmp_path) == ["notes.txt"]
    prepare_output_dir(tmp_path, overwrite=False)  # now nothing to refuse


def test_prepare_output_dir_on_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        prepare_output_dir(path, overwrite=True)


# ---------------------------------------------------------------- killed mid-write

WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from fineinstructions.io import ShardWriter
    from fineinstructions.records import DocumentRow

    out = sys.argv[1]
    text = "lorem ipsum dolor sit amet " * 40
    writer = ShardWriter(out, DocumentRow, rows_per_shard=2000)
    i = 0
    print("started", flush=True)
    while True:
        writer.write([DocumentRow(id=f"d{i}-{j}", text=text + str(j), source="s", token_count=j)
                      for j in range(500)])
        i += 1
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.13, 0.31])
def test_killed_writer_leaves_only_complete_shards(tmp_path, delay):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if out.is_dir() and len(list(out.glob("part-*.parquet"))) >= 2:
                break
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.005)
        else:
            pytest.fail("the writer wrote no shards in 20 s")
        time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    shards = sorted(out.glob("*.parquet"))
    assert len(shards) >= 2
    assert [p.name for p in shards] == [f"part-{i:05d}.parquet" for i in range(len(shards))]
    for shard in shards:
        table = pq.read_table(shard)  # a half-written file would not read
        assert table.num_rows == 2000
        assert table.schema.equals(DocumentRow.SCHEMA)
    leftovers = [name for name in os.listdir(out) if not name.endswith(".parquet")]
    assert all(name.startswith(".") and name.endswith(".tmp") for name in leftovers), leftovers
    assert input_files([out]) == shards
    assert sum(1 for _ in read_rows([out], DocumentRow)) == 2000 * len(shards)
