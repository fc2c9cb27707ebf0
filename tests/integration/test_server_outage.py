"""A long server outage costs time, never rows: a real llama.cpp server on 127.0.0.1,
killed mid-stage for longer than the retry budget, then started again. The stage stops
with a clear word and exit 2, without committing the shard whose calls failed; the rerun
makes only the calls that are missing and ends with the rows an uninterrupted run makes.
A refusal by the server (a deterministic failure) stays final."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.llama_server import MODEL_ALIAS, LlamaServer

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def command(queries: Path, out: Path, base_url: str) -> list[str]:
    settings = {
        "templatize.llm.backend": "openai", "templatize.llm.model": MODEL_ALIAS, "templatize.llm.dialect": "llama_cpp",
        "templatize.llm.base_url": base_url, "templatize.llm.max_retries": "2", "templatize.shard_size": "2",
        "templatize.batch_size": "1", "queries.moderation": "off",
    }
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return [sys.executable, "-m", "fineinstructions", "templatize", str(queries), "-o", str(out), "--quiet", *sets]


def cached_calls(out: Path) -> int:
    with sqlite3.connect(Path(str(out) + ".cache.sqlite")) as db:
        return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


def templates(out: Path) -> list[dict]:
    return [row for path in sorted(out.glob("part-*.parquet")) for row in pq.read_table(path).to_pylist()]


def test_an_outage_longer_than_the_retries_stops_the_stage_and_the_rerun_goes_on(tmp_path):
    rows = [json.loads(line) for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    picked = [q for q in rows if q["source"] == "natural-questions"][::50][:6]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in picked))
    server = LlamaServer(n_ctx=2048).start()
    out = tmp_path / "templates"
    try:
        run = subprocess.Popen(command(queries, out, server.base_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first_marker = out / ".work" / "templatized" / ".shards" / "00000.json"
        deadline = time.monotonic() + 300
        while not first_marker.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first_marker.exists(), run.communicate()
        started = time.monotonic()
        server.stop()  # killed, mid-stage, and kept down until the command has given up
        _, stderr = run.communicate(timeout=300)
        gave_up = time.monotonic() - started
        assert run.returncode == 2, stderr
        assert "the LLM server is unreachable" in stderr and "failing since" in stderr
        assert "run the same command again" in stderr and "Traceback" not in stderr
        done = sorted(p.name for p in first_marker.parent.glob("[0-9]*.json"))
        assert "00002.json" not in done  # the shards after the outage were not committed
        before = cached_calls(out)

        server.start()  # the same port
        restarted = time.monotonic() - started
        again = subprocess.run(command(queries, out, server.base_url), capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        made_on_rerun = cached_calls(out) - before

        clean = tmp_path / "clean"
        fresh = subprocess.run(command(queries, clean, server.base_url), capture_output=True, text=True, timeout=600)
        assert fresh.returncode == 0, fresh.stderr
    finally:
        server.stop()
    stats = json.loads((out / "stats.json").read_text())["templatize"]
    assert stats["in"] == len(picked)
    assert "server_unavailable" not in json.dumps(stats) and "backend_error" not in json.dumps(stats)
    assert templates(out) == templates(clean)
    # Only the missing calls were made again: those the first run had finished were kept.
    assert before >= 2 and made_on_rerun == cached_calls(clean) - before
    print(f"\noutage timeline: killed at 0 s (after shard 0), command gave up at {gave_up:.1f} s, "
          f"server back at {restarted:.1f} s; calls cached before the outage {before}, made on the rerun "
          f"{made_on_rerun}, an uninterrupted run {cached_calls(clean)}")
