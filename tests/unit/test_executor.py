"""Executors and what makes a stage safe to spread over workers: batches in order, read
counts carried back, URL inputs, per-worker request caches merged into the stage cache,
and keyed shards that resume without a row lost or written twice."""

import json
import pickle
import signal
import subprocess
import sys

import fsspec
import pytest

from fineinstructions.errors import InputError, MissingDependencyError
from fineinstructions.execution.executor import Files, Items, LocalExecutor, Place, worker_caches
from fineinstructions.execution.ledger import ShardLedger
from fineinstructions.io import ReadStats, read_documents
from fineinstructions.models.cache import CachedLLM, merge_caches
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import Request
from fineinstructions.records import PairRow


class Ids:
    """A task that returns the ids of its batch, and nothing for a batch of one row."""

    stage = "match"
    batch_size = 3

    def start(self, place):
        return lambda rows: None if len(rows) == 1 else [r if isinstance(r, int) else r.id for r in rows]


def test_the_local_executor_gives_results_in_order_and_leaves_out_empty_ones():
    results = list(LocalExecutor().map(Items(range(7)), Ids()))
    assert results == [[0, 1, 2], [3, 4, 5]]  # [6] gave None: nothing to do


def test_read_counts_come_back_with_the_rows(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "b", "text": "  "}\n{"id": "c", "text": 3}\n{"id": "d", "text": "four"}\n')
    stats = ReadStats()
    results = list(LocalExecutor().map(Files((str(path),), "documents", on_error="skip"), Ids(), stats))
    assert results == [["a", "d"]]
    assert (stats.rows, stats.records, dict(stats.skipped)) == (4, 2, {"empty_text": 1, "invalid_row": 1})
    with pytest.raises(InputError, match=r"docs.jsonl, line 3: field 'text'"):
        list(LocalExecutor().map(Files((str(path),), "documents"), Ids()))


def test_documents_read_from_a_url_are_the_documents_read_from_a_file(tmp_path):
    lines = "".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(5))
    (tmp_path / "a.jsonl").write_text(lines)
    with fsspec.open("memory://corpus/part-0.jsonl", "w") as handle:
        handle.write(lines)
    from_url = list(read_documents(["memory://corpus/"]))
    assert [(d.id, d.text) for d in from_url] == [(d.id, d.text) for d in read_documents([tmp_path / "a.jsonl"])]
    assert from_url[0].source == "part-0"
    with fsspec.open("memory://corpus/bad.jsonl", "w") as handle:
        handle.write('{"id": "x"}\n')
    with pytest.raises(InputError, match=r"memory://corpus/bad.jsonl, line 1: field 'text'"):
        list(read_documents(["memory://corpus/bad.jsonl"]))
    with pytest.raises(InputError, match="no such file or folder"):
        list(read_documents(["memory://nowhere/x.jsonl"]))


def test_input_errors_cross_processes_whole():
    error = InputError("s3://b/docs.jsonl", "missing", location="line 9", field="text", fix="pass --text-field")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.field == "text" and again.location == "line 9"
    assert str(pickle.loads(pickle.dumps(MissingDependencyError("ray", "ray", "--executor ray")))).startswith("--executor ray needs")


def test_a_worker_writes_its_own_cache_and_reads_the_stage_cache(tmp_path):
    main = tmp_path / "pairs.cache.sqlite"
    batch = [Request.chat(("user", f"q{i}")) for i in range(4)]
    first = CachedLLM(ScriptedLLM(["a0", "a1"]), main)
    first.generate(batch[:2])
    first.close()

    mine, shared = Place("host-1-x", distributed=True).cache(main)
    assert shared == main and mine == worker_caches(main) / "host-1-x.sqlite"
    assert Place("here", distributed=False).cache(main) == (main, None)
    backend = ScriptedLLM(["a2", "a3"])
    worker = CachedLLM(backend, mine, shared=shared)
    answers = worker.generate(batch)
    assert [a.text for a in answers] == ["a0", "a1", "a2", "a3"]
    assert len(backend.calls) == 2 and (worker.hits, worker.misses) == (2, 2)
    worker.close()

    assert merge_caches(main, worker_caches(main)) == 2
    assert not worker_caches(main).exists()
    assert merge_caches(main, worker_caches(main)) == 0  # nothing left: a no-op
    again = CachedLLM(ScriptedLLM([]), main)
    assert [a.text for a in again.generate(batch)] == ["a0", "a1", "a2", "a3"]  # no model call


def test_a_killed_worker_cache_is_merged_with_what_it_had_committed(tmp_path):
    main = tmp_path / "judged.cache.sqlite"
    part = worker_caches(main) / "host-2-y.sqlite"
    # A worker answers one request, then is killed: its file (and log) stay as they are.
    script = (
        "import os, signal, sys\n"
        "from fineinstructions.models.cache import CachedLLM\n"
        "from fineinstructions.models.fake import ScriptedLLM\n"
        "from fineinstructions.models.llm import Request\n"
        "CachedLLM(ScriptedLLM(['b0']), sys.argv[1], shared=sys.argv[2]).generate([Request.chat(('user', 'q'))])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    process = subprocess.run([sys.executable, "-c", script, str(part), str(main)], timeout=60)
    assert process.returncode == -signal.SIGKILL and part.exists()
    assert merge_caches(main, worker_caches(main)) == 1
    assert [a.text for a in CachedLLM(ScriptedLLM([]), main).generate([Request.chat(("user", "q"))])] == ["b0"]


def pair(i: int) -> PairRow:
    return PairRow(
        id=f"p{i}", document_id=f"d{i}", template_id="t", query_id="q", instruction="i", answer="a",
        excerpt_ratio=1.0, excerpt_spans=((0, 1),), instantiate_model="m", instantiate_prompt_version="v",
    )


def test_a_resumed_ledger_skips_finished_inputs_and_drops_what_an_unfinished_shard_left(tmp_path):
    ledger = ShardLedger(tmp_path / "out", {"stage": "test"})
    ledger.commit(0, [pair(0)], PairRow, [], {"in": 1, "inputs": ["d0"]})
    ledger.commit(1, [pair(1)], PairRow, [], {"in": 1, "inputs": ["d1"]})
    (tmp_path / "out" / ".shards" / "00001.json").unlink()  # killed before its marker
    (tmp_path / "out" / "part-00002.parquet").write_bytes(b"half a file")

    again = ShardLedger(tmp_path / "out", {"stage": "test"})
    done, next_shard = again.start()
    assert done == {"d0"} and next_shard == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == ["part-00000.parquet"]
    assert not (tmp_path / "out" / ".shards" / "00001.rejects.jsonl").exists()
