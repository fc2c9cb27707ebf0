import json
import sqlite3
import subprocess
import sys

from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import (
    Capabilities,
    ErrorKind,
    Request,
    capabilities,
    failed,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def requests(n, **options):
    return [Request.chat(("user", f"question {i}"), **options) for i in range(n)]


def test_rerunning_a_finished_batch_makes_zero_model_calls(tmp_path):
    backend = ScriptedLLM([f"answer {i}" for i in range(3)])
    cached = CachedLLM(backend, tmp_path / "cache.sqlite")
    first = cached.generate(requests(3))
    assert len(backend.calls) == 3

    again = CachedLLM(backend, tmp_path / "cache.sqlite")  # a new process would do this
    second = again.generate(requests(3))
    assert len(backend.calls) == 3  # no new calls
    assert second == first
    assert (again.hits, again.misses) == (3, 0)


def test_a_hit_returns_exactly_what_the_model_returned(tmp_path):
    backend = ScriptedLLM(['{"a": 1}', '{"a": "x"}'])
    cached = CachedLLM(backend, tmp_path / "c.sqlite")
    batch = requests(2, json_schema=SCHEMA)
    first = cached.generate(batch)
    assert first[0].parsed == {"a": 1} and first[1].error_kind is ErrorKind.INVALID_OUTPUT
    assert cached.generate(batch) == first


def test_only_missing_requests_reach_the_model_and_order_is_kept(tmp_path):
    backend = ScriptedLLM(["one"])
    cached = CachedLLM(backend, tmp_path / "c.sqlite")
    batch = requests(3)
    cached.generate([batch[1]])
    backend.queue("zero", "three")
    out = cached.generate(batch)
    assert [c.text for c in out] == ["zero", "one", "three"]
    assert [r.messages[0].content for r in backend.calls] == ["question 1", "question 0", "question 2"]


def test_distinct_seeds_are_distinct_keys(tmp_path):
    backend = ScriptedLLM(["a", "b"])
    cached = CachedLLM(backend, tmp_path / "c.sqlite")
    out = cached.generate(
        [
            Request.chat(("user", "same"), temperature=0.9, seed=1),
            Request.chat(("user", "same"), temperature=0.9, seed=2),
        ]
    )
    assert [c.text for c in out] == ["a", "b"] and len(backend.calls) == 2


def test_a_different_model_does_not_share_entries(tmp_path):
    CachedLLM(ScriptedLLM(["from a"], model="a"), tmp_path / "c.sqlite").generate(requests(1))
    other = ScriptedLLM(["from b"], model="b")
    assert CachedLLM(other, tmp_path / "c.sqlite").generate(requests(1))[0].text == "from b"


def test_transient_backend_errors_are_retried_not_cached(tmp_path):
    backend = ScriptedLLM([failed(ErrorKind.BACKEND_ERROR, "503 after 5 tries"), "recovered"])
    cached = CachedLLM(backend, tmp_path / "c.sqlite")
    assert cached.generate(requests(1))[0].error_kind is ErrorKind.BACKEND_ERROR
    assert cached.generate(requests(1))[0].text == "recovered"


def test_deterministic_failures_are_cached(tmp_path):
    backend = ScriptedLLM([failed(ErrorKind.CONTEXT_OVERFLOW, "too long", prompt_tokens=9000)])
    cached = CachedLLM(backend, tmp_path / "c.sqlite")
    cached.generate(requests(1))
    again = cached.generate(requests(1))[0]
    assert (again.error_kind, again.error_detail, again.prompt_tokens) == (ErrorKind.CONTEXT_OVERFLOW, "too long", 9000)
    assert isinstance(again.error_kind, ErrorKind)
    assert len(backend.calls) == 1


def test_readers_in_other_processes_see_committed_entries_while_a_writer_is_open(tmp_path):
    path = tmp_path / "c.sqlite"
    writer = CachedLLM(ScriptedLLM(["shared answer"]), path)
    writer.generate(requests(1))
    code = f"""
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.models.llm import Request
reader = CachedLLM(ScriptedLLM([]), {str(path)!r})
print(reader.generate([Request.chat(("user", "question 0"))])[0].text)
"""
    outs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    assert [p.communicate(timeout=60)[0].strip() for p in outs] == ["shared answer"] * 3


def test_completions_cached_with_the_old_error_string_still_load(tmp_path):
    """Caches written before errors were typed hold ``"error": "kind: detail"``."""
    path = tmp_path / "c.sqlite"
    backend = ScriptedLLM(['{"a": 1}'])
    CachedLLM(backend, path).generate(requests(1, json_schema=SCHEMA))
    old = {"text": "{", "parsed": None, "finish_reason": "length", "prompt_tokens": 4, "completion_tokens": 1,
           "error": "invalid_output: not JSON (Expecting value at 1)", "cached_tokens": 0}
    with sqlite3.connect(path) as db:
        db.execute("UPDATE completions SET completion = ?", (json.dumps(old),))
    (loaded,) = CachedLLM(ScriptedLLM([]), path).generate(requests(1, json_schema=SCHEMA))
    assert loaded.error_kind is ErrorKind.INVALID_OUTPUT and not loaded.ok
    assert loaded.error_detail == "not JSON (Expecting value at 1)"
    assert (loaded.text, loaded.finish_reason, loaded.prompt_tokens) == ("{", "length", 4)


def test_the_cache_forwards_what_its_backend_declares(tmp_path):
    declared = Capabilities(constrains_gbnf=True, caches_prefixes=True)
    cached = CachedLLM(ScriptedLLM(capabilities=declared), tmp_path / "c.sqlite")
    assert capabilities(cached) == declared
    assert cached.token_count_method == ScriptedLLM.token_count_method
    assert cached.commit_every == 1


def test_a_worker_cache_still_in_use_is_merged_the_next_time(tmp_path):
    from fineinstructions.models.cache import merge_caches

    workers = tmp_path / "cache.d"
    workers.mkdir()
    worker = CachedLLM(ScriptedLLM(["answer 0"]), workers / "host-1-a.sqlite")
    worker.generate(requests(1))
    worker.close()
    # A process still holds the file for writing (in rollback-journal mode, where that
    # locks readers out: a worker's job being torn down, as seen on Ray).
    holder = sqlite3.connect(workers / "host-1-a.sqlite", isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("DELETE FROM completions WHERE 0")
    try:
        assert merge_caches(tmp_path / "cache.sqlite", workers) == 0
        assert (workers / "host-1-a.sqlite").exists()
    finally:
        holder.rollback()
        holder.close()
    assert merge_caches(tmp_path / "cache.sqlite", workers) == 1
    assert not workers.exists()
    again = CachedLLM(ScriptedLLM([]), tmp_path / "cache.sqlite")
    assert again.generate(requests(1))[0].text == "answer 0"
