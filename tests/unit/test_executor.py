"""The runner and its parts: pieces of input files, shards written by workers, markers,
resume, request caches of workers, the duplicate-id reduce."""

import json
import os
import pickle
import sqlite3
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import InputError, UserError
from fineinstructions.execution.executor import worker_caches
from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.runner import merge_worker_caches, run_stage
from fineinstructions.execution.shards import InputShard, ReadSpec, plan_corpus, read_shard
from fineinstructions.io import read_rows
from fineinstructions.io.pieces import plan_pieces, read_piece
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import Request
from fineinstructions.records import MatchRow
from fineinstructions.stages.base import Stage, StageBatch, outcomes


def write_documents(path, texts, ids=None):
    ids = ids or [f"d{i}" for i in range(len(texts))]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    return path


class Words(Stage):
    """A toy stage: each document becomes a match row per word; empty ones are skipped."""

    name = "match"
    output = MatchRow
    batch_size = 2

    def __init__(self, crash_at=None):
        self.calls = 0
        self.opened = 0
        self.crash_at = crash_at

    def open(self, worker):
        self.opened += 1  # where a real stage loads its model

    def process(self, batch):
        out = StageBatch()
        for document in batch:
            self.calls += 1
            if self.crash_at is not None and document.id == self.crash_at:
                raise KeyboardInterrupt  # as a kill would: nothing of this shard commits
            words = document.text.split()
            if len(words) > 1:
                out.keep(*[MatchRow(document_id=document.id, template_id=w, chunk=k, score=1.0) for k, w in enumerate(words)])
            else:
                out.skip("one_word")
            out.add(words=len(words))
        return out


def run(stage, docs, out, rows=2, **options):
    return run_stage(stage, lambda: plan_corpus([docs], "documents", rows), out, inputs={"documents": [str(docs)]},
                     show_progress=False, log=lambda m: None, **options)


def test_jsonl_pieces_cover_every_line_once_with_its_number(tmp_path):
    docs = write_documents(tmp_path / "d.jsonl", [f"text {i}" for i in range(7)])
    pieces = plan_pieces(docs, 3)
    assert [p.rows for p in pieces] == [3, 3, 1]
    got = [(location, record["id"]) for piece in pieces for location, record in read_piece(piece)]
    assert got == [(f"line {i + 1}", f"d{i}") for i in range(7)]
    assert [p.rows for p in plan_pieces(docs, 3, limit=4)] == [3, 1]


def test_parquet_pieces_are_row_groups(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(10)], "text": ["x"] * 10}), path, row_group_size=2)
    pieces = plan_pieces(path, 4)
    assert [p.rows for p in pieces] == [4, 4, 2]
    assert [loc for p in pieces for loc, _ in read_piece(p)] == [f"row {i + 1}" for i in range(10)]


def test_a_bad_row_names_its_real_line_in_a_later_piece(tmp_path):
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"id": "a", "text": "x"}\n' * 5 + '{"id": "b"}\n')
    shards = plan_corpus([docs], "documents", 2)
    with pytest.raises(InputError, match=r"d.jsonl, line 6: field 'text': missing"):
        list(read_shard(shards[-1], ReadSpec())[0])


def test_workers_write_shards_and_counts_balance(tmp_path):
    docs = write_documents(tmp_path / "d.jsonl", ["a b", "c", "d e f", "g h", "i"])
    result = run(Words(), docs, tmp_path / "out")
    c = result.counts
    assert outcomes(c) == {"in": 5, "out": 3, "skipped": {"one_word": 2}, "failed": {}}
    assert c["words"] == 9 and c["read:records"] == 5
    # The last shard kept nothing, so it has a marker and no data file.
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == ["part-00000.parquet", "part-00001.parquet"]
    markers = ShardFolder(tmp_path / "out").finished()
    assert [m["inputs"]["piece"]["first"] for m in markers.values()] == [1, 3, 5]


def test_a_crash_mid_stage_resumes_to_the_same_output_and_a_finished_stage_costs_nothing(tmp_path):
    docs = write_documents(tmp_path / "d.jsonl", ["a b", "c", "d e f", "g h", "i j"])
    expected = run(Words(), docs, tmp_path / "expected")
    with pytest.raises(KeyboardInterrupt):
        run(Words(crash_at="d3"), docs, tmp_path / "out")
    folder = ShardFolder(tmp_path / "out")
    assert sorted(folder.finished()) == [0]  # shard 1 died before its marker
    (tmp_path / "out" / "part-00001.parquet").write_text("left by the dead shard")
    stage = Words()
    again = run(stage, docs, tmp_path / "out", rows=100)  # a new shard size: the first plan holds
    assert stage.calls == 3  # shards 1 and 2 only
    assert again.counts == Counter({k: v for k, v in expected.counts.items() if k != "seconds"}) + Counter(seconds=again.counts["seconds"])
    assert list(read_rows([tmp_path / "out"], MatchRow)) == list(read_rows([tmp_path / "expected"], MatchRow))
    third = Words()
    run(third, docs, tmp_path / "out")
    assert third.calls == 0 and third.opened == 0  # no model loaded for a finished stage


def test_a_different_job_is_refused_and_overwrite_starts_over(tmp_path):
    docs = write_documents(tmp_path / "d.jsonl", ["a b"])
    run(Words(), docs, tmp_path / "out")
    other = Words()
    other.version = "2"
    with pytest.raises(UserError, match="differs in: version"):
        run(other, docs, tmp_path / "out")
    run(other, docs, tmp_path / "out", overwrite=True)
    assert other.calls == 1


def test_a_document_id_seen_earlier_is_dropped_within_and_across_shards(tmp_path):
    from fineinstructions.execution.match import drop_duplicate_ids

    docs = write_documents(tmp_path / "d.jsonl", ["a b", "a b", "c d", "e f", "a b"], ids=["x", "x", "y", "z", "x"])
    result = run(Words(), docs, tmp_path / "out", record_ids=True)
    assert result.counts["read:skipped:duplicate_id"] == 1  # the second x, in the first shard
    folder = ShardFolder(tmp_path / "out")
    assert drop_duplicate_ids(folder, folder.finished(), "parquet") == 1  # the third x, in the last shard
    assert drop_duplicate_ids(folder, folder.finished(), "parquet") == 1  # idempotent
    rows = list(read_rows([tmp_path / "out"], MatchRow))
    assert Counter(r.document_id for r in rows) == {"x": 2, "y": 2, "z": 2}  # x's two words, once
    markers = folder.finished()
    total = Counter()
    for marker in markers.values():
        total.update(marker["counts"])
    assert outcomes(total)["in"] == outcomes(total)["out"] + sum(outcomes(total)["skipped"].values())
    assert outcomes(total)["skipped"] == {"duplicate_id": 1}


def test_a_shard_description_crosses_processes():
    shard = InputShard(3, "documents")
    assert pickle.loads(pickle.dumps(shard)) == shard


def test_input_errors_cross_processes_whole():
    error = InputError("docs.jsonl", "field 'text': missing", location="line 2", fix="add it")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and isinstance(again, UserError)


def test_a_worker_cache_reads_the_stage_cache_and_is_merged_after(tmp_path):
    main = tmp_path / "pairs.cache.sqlite"
    request = Request.chat(("user", "hello"))
    first = CachedLLM(ScriptedLLM(["one"]), main)
    first.generate([request])
    first.close()
    folder = worker_caches(main)
    folder.mkdir()
    worker = CachedLLM(ScriptedLLM(["two"]), folder / "host-1-abc.sqlite", shared=main)
    assert worker.generate([request])[0].text == "one" and worker.hits == 1
    worker.generate([Request.chat(("user", "again"))])
    worker.close()
    merge_worker_caches(main)
    assert not folder.exists()
    with sqlite3.connect(main) as db:
        assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 2


def test_documents_from_a_url_are_the_documents_from_the_file(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    docs = write_documents(tmp_path / "d.jsonl", ["a b", "c d"])
    with fsspec.open("memory://corpus/d.jsonl", "wb") as handle:
        handle.write(docs.read_bytes())
    local = run(Words(), docs, tmp_path / "local")
    url = run_stage(Words(), lambda: plan_corpus(["memory://corpus/d.jsonl"], "documents", 2), tmp_path / "url",
                    inputs={}, show_progress=False, log=lambda m: None)
    assert outcomes(url.counts) == outcomes(local.counts)
    assert list(read_rows([tmp_path / "url"], MatchRow)) == list(read_rows([tmp_path / "local"], MatchRow))
    assert os.path.exists(tmp_path / "url" / "part-00000.parquet")


def test_throughput_of_the_job_and_of_a_worker_are_kept_apart():
    from fineinstructions.execution.runner import StageRun

    # Two workers, 5 s each, side by side: the job took 5 s of wall time.
    run = StageRun(counts=Counter({"in": 100, "seconds": 10.0, "tokens": 1000}), wall_seconds=5.0)
    rates = run.rates("in", "tokens", name="documents")
    assert rates["documents_per_s"] == 20.0 and rates["documents_per_s_per_worker"] == 10.0
    assert rates["tokens_per_s"] == 200.0 and rates["tokens_per_s_per_worker"] == 100.0
    resumed = StageRun(counts=Counter({"in": 100, "seconds": 10.0}), wall_seconds=0.1, resumed=3)
    assert resumed.rates("in")["rows_per_s"] is None  # this run's wall time did not make those rows


def test_a_long_stage_in_a_log_file_reports_progress_at_a_steady_interval(tmp_path, capsys):
    import time

    class Slow(Words):
        def process(self, batch):
            time.sleep(0.3)
            return super().process(batch)

    docs = write_documents(tmp_path / "d.jsonl", ["a b"] * 4)
    run_stage(Slow(), lambda: plan_corpus([docs], "documents", 2), tmp_path / "out", inputs={}, unit="documents",
              show_progress=True, progress_interval=0.1, log=lambda m: None)
    lines = capsys.readouterr().err.splitlines()  # not a terminal: plain lines
    assert len(lines) >= 4  # while the slow batches ran, not only at the end
    assert any("match: 0/4 documents" in line or "match: 2/4 documents" in line for line in lines)
    assert "ETA" in " ".join(lines[:-1]) and lines[-1].startswith("match: 4/4 documents")


def test_a_shard_plan_survives_its_file_whole():
    from fineinstructions.execution.runner import shard_from_json, shard_to_json
    from fineinstructions.io.pieces import Piece

    shard = InputShard(7, "joined", piece=Piece("d.jsonl", "bytes", 10, 90, 3, 4), files=("m/part-00007.parquet",),
                       row_type="MatchRow", rows=4, skip_hashes=(2**63 + 5,), bank=("templates/part-00000.parquet",))
    assert shard_from_json(json.loads(json.dumps(shard_to_json(shard)))) == shard


def test_workers_are_closed_before_their_caches_are_merged(tmp_path, monkeypatch):
    import fineinstructions.execution.runner as runner

    order = []

    class Closing(Words):
        def close(self):
            order.append("close")

    monkeypatch.setattr(runner, "merge_worker_caches", lambda cache, log=None: order.append("merge"))
    docs = write_documents(tmp_path / "d.jsonl", ["a b", "c d"])
    run(Closing(), docs, tmp_path / "out", cache=tmp_path / "out.cache.sqlite")
    # Merged before (what a killed run's workers left), then only after the worker let go.
    assert order == ["merge", "close", "merge"]
