"""The Ray executor on a local Ray instance (2 CPUs), with the real embedded models on
real data from ../shared/data: the same rows as the local executor (whatever order the
shards finish in), and a worker killed mid-stage that Ray restarts without a row lost or
written twice."""

import json
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from fineinstructions.config import load_config
from fineinstructions.execution.executor import RayExecutor
from fineinstructions.execution.instantiate import run_instantiate
from fineinstructions.execution.pipeline import run_pipeline
from fineinstructions.io import read_documents
from support.float_noise import up_to_float_noise

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
STAGES = ("templatize", "index", "match", "instantiate", "judge", "pack")
# Two workers per stage on a 2-CPU machine, leaving room for the reading tasks.
TWO_WORKERS = [f"ray.{s}.actors=2" for s in STAGES] + [f"ray.{s}.cpus_per_actor=0.8" for s in STAGES]
# A low threshold gives every stage work; the relevance gate would drop those poor pairs
# before the judge (it is tested on its own), so it is off: the judge must run here.
SETTINGS = ["match.threshold=0.15", "instantiate.shard_size=1", "judge.batch_size=2", "judge.min_relevance=null", *TWO_WORKERS]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines()][::150][:24]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    documents = [d for d in list(read_documents([DATA / "documents.jsonl"]))[::37] if len(d.text) < 6000][:4]
    (folder / "documents.jsonl").write_text(
        "".join(json.dumps({"id": d.id, "text": d.text, "source": d.source}) + "\n" for d in documents)
    )
    return folder / "queries.jsonl", folder / "documents.jsonl"


@pytest.fixture(scope="module")
def local_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    stats = run_pipeline([inputs[0]], [inputs[1]], out, load_config("embedded", overrides=SETTINGS),
                         show_progress=False, report=False, log=lambda m: None)
    return out, stats


def rows(folder: Path) -> list[dict]:
    found = []
    for path in sorted(folder.glob("part-*.parquet")):
        found += pq.read_table(path).to_pylist()
    return found


def counts(step: dict) -> dict:
    return {k: step.get(k) for k in ("in", "out", "skipped", "failed")}


def test_the_ray_executor_writes_the_same_rows_as_the_local_one(inputs, local_run, cluster, tmp_path):
    local, local_stats = local_run
    config = load_config("embedded", overrides=SETTINGS)  # shards finish in any order
    out = tmp_path / "run"
    messages = []
    stats = run_pipeline([inputs[0]], [inputs[1]], out, config, executor=RayExecutor(config.ray),
                         show_progress=False, report=False, log=messages.append)
    assert stats["funnel"] == local_stats["funnel"]
    assert stats["funnel"]["matches"] > 0 and stats["funnel"]["grounded"] > 0
    for stage in STAGES:
        assert counts(stats["stages"][stage]) == counts(local_stats["stages"][stage]), stage
    for folder in ("templates", "matches", "pairs", "judged", "dataset"):
        # The same rows in the same order; scores equal up to the embedder's float noise.
        assert rows(out / folder) == up_to_float_noise(rows(local / folder)), folder
        assert (out / folder / "stats.json").exists()
    assert any("executor ray" in m for m in messages)
    assert json.loads((out / "run.json").read_text())["executor"] == "ray"
    # The workers' own request caches were folded into each stage's cache.
    for stage in ("templates", "pairs", "judged"):
        assert not (out / f"{stage}.cache.d").exists()
        with sqlite3.connect(out / f"{stage}.cache.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] > 0

    # Resumed with the local executor: every shard is found finished, no model is called.
    again = run_pipeline([inputs[0]], [inputs[1]], out, config, show_progress=False, report=False, log=messages.append)
    assert again["funnel"] == stats["funnel"]
    assert rows(out / "pairs") == up_to_float_noise(rows(local / "pairs"))


def _worker_pids(folder: Path) -> list[int]:
    # A worker's cache file is named HOST-PID-RANDOM.sqlite.
    return [int(p.stem.rsplit("-", 2)[1]) for p in folder.glob("*.sqlite")] if folder.exists() else []


def test_a_worker_killed_mid_stage_is_retried_without_losing_or_repeating_rows(inputs, local_run, cluster, tmp_path):
    local, local_stats = local_run
    config = load_config("embedded", overrides=SETTINGS)
    out = tmp_path / "pairs"
    result: dict = {}

    def stage() -> None:
        try:
            result["stats"] = run_instantiate(
                [local / "matches"], [local / "templates"], [inputs[1]], out, config,
                executor=RayExecutor(config.ray), show_progress=False, log=lambda m: None,
            )
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            result["error"] = error

    thread = threading.Thread(target=stage)
    thread.start()
    killed = None
    deadline = time.monotonic() + 300
    while thread.is_alive() and killed is None and time.monotonic() < deadline:
        pids = _worker_pids(tmp_path / "pairs.cache.d")
        if pids:  # a worker is up and the stage is under way: kill it with SIGKILL
            time.sleep(1.0)
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    thread.join(timeout=600)
    assert killed is not None, "the stage ended before a worker could be killed"
    assert "error" not in result, result.get("error")
    stats = result["stats"]["instantiate"]
    assert counts(stats) == counts(local_stats["stages"]["instantiate"])
    got = rows(out)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows(local / "pairs"))
    assert len({r["id"] for r in got}) == len(got)  # no row written twice
    assert sorted(got, key=lambda r: r["id"]) == sorted(rows(local / "pairs"), key=lambda r: r["id"])
    markers = [json.loads(p.read_text()) for p in (out / ".shards").glob("[0-9]*.json")]
    planned = json.loads((out / ".shards" / "plan.json").read_text())
    assert sorted(m["shard"] for m in markers) == [s["index"] for s in planned]  # each shard committed once
    assert sum(m["counts"].get("documents", 0) for m in markers) == stats["documents"]


def test_a_bad_input_row_read_on_ray_is_the_same_clear_error(cluster, local_run, tmp_path):
    from fineinstructions.errors import InputError, UserError
    from fineinstructions.execution.match import run_match

    local, _ = local_run
    bad = tmp_path / "documents.jsonl"
    bad.write_text('{"id": "a", "text": "a document"}\n{"id": "b", "body": "no text field"}\n')
    config = load_config("embedded", overrides=TWO_WORKERS)
    with pytest.raises(InputError) as caught:
        run_match([bad], local / "index", tmp_path / "m", config, executor=RayExecutor(config.ray), show_progress=False, log=lambda m: None)
    assert str(caught.value).startswith(f"{bad}, line 2: field 'text': missing")

    too_big = load_config("embedded", overrides=["ray.match.actors=3"])
    with pytest.raises(UserError, match=r"ray.match: 3 worker\(s\) x 1.0 CPU .* do not fit the cluster \(2 CPUs"):
        run_match([bad], local / "index", tmp_path / "m2", too_big, executor=RayExecutor(too_big.ray), show_progress=False, log=lambda m: None)


def test_a_stage_command_joins_a_running_cluster(cluster, local_run, tmp_path):
    import subprocess
    import sys

    local, _ = local_run
    address = ray.get_runtime_context().gcs_address
    executable = str(Path(sys.executable).with_name("fineinstructions"))
    command = [
        executable, "judge", str(local / "pairs"), "-o", str(tmp_path / "judged"),
        "--executor", "ray", "--ray-address", address, *sum((["--set", s] for s in SETTINGS), []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "executor ray" in done.stderr and "judged " in done.stderr
    assert sorted(rows(tmp_path / "judged"), key=lambda r: r["id"]) == sorted(rows(local / "judged"), key=lambda r: r["id"])


def test_documents_given_as_a_url_are_read_by_the_workers(cluster, inputs, local_run, tmp_path):
    from fineinstructions.execution.match import run_match

    local, _ = local_run
    config = load_config("embedded", overrides=SETTINGS)
    url = inputs[1].resolve().as_uri()  # file:///…: read through fsspec, as s3:// would be
    stats = run_match([url], local / "index", tmp_path / "matches", config, executor=RayExecutor(config.ray),
                      show_progress=False, log=lambda m: None)
    assert stats["read_documents"]["records"] == 4
    # A URL is one shard (here four documents embedded in one batch, where the local run
    # had one a shard): the scores may differ in the last float bits, nothing else.
    got, expected = rows(tmp_path / "matches"), rows(local / "matches")
    assert [dict(r, score=None) for r in got] == [dict(r, score=None) for r in expected]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-5)


def test_a_ray_run_killed_mid_stage_resumes_without_repeating_finished_work(cluster, inputs, local_run, tmp_path):
    import subprocess
    import sys

    from fineinstructions.execution.match import run_match

    local, _ = local_run
    # Every document matched (threshold 0): four shards of several requests each, so the
    # driver can be killed between two commits.
    settings = [*SETTINGS, "match.threshold=0.0", "match.candidates=8"]
    config = load_config("embedded", overrides=settings)
    run_match([inputs[1]], local / "index", tmp_path / "matches", config, show_progress=False, log=lambda m: None)
    expected = run_instantiate([tmp_path / "matches"], [local / "templates"], [inputs[1]], tmp_path / "expected", config,
                               show_progress=False, log=lambda m: None)["instantiate"]
    assert expected["documents"] == 4

    out = tmp_path / "pairs"
    executable = str(Path(sys.executable).with_name("fineinstructions"))
    command = [
        executable, "instantiate", str(tmp_path / "matches"), "--templates", str(local / "templates"),
        "--documents", str(inputs[1]), "-o", str(out), "--executor", "ray",
        "--ray-address", ray.get_runtime_context().gcs_address, *sum((["--set", s] for s in settings), []),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if any((out / ".shards").glob("[0-9]*.json")):
            os.kill(process.pid, signal.SIGKILL)  # the driver: Ray then ends its workers
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
    assert not (out / "stats.json").exists()
    committed = sum(json.loads(p.read_text())["counts"].get("in", 0) for p in (out / ".shards").glob("[0-9]*.json"))
    answered = _answered(tmp_path / "pairs.cache.d")  # calls the killed run's workers completed

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "instantiate: resuming: " in again.stderr
    stats = json.loads((out / "stats.json").read_text())["instantiate"]
    assert counts(stats) == counts(expected)
    assert sorted(rows(out), key=lambda r: r["id"]) == sorted(rows(tmp_path / "expected"), key=lambda r: r["id"])
    # The calls the killed run completed for shards it had not committed came from the
    # merged worker caches, not from the model: none was made twice.
    assert stats["cache_hits"] == answered - committed
    assert stats["model_calls"] == stats["in"] - stats["cache_hits"]
    assert not (tmp_path / "pairs.cache.d").exists()
    with sqlite3.connect(tmp_path / "pairs.cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == stats["in"]


def _answered(folder: Path) -> int:
    """Completions in the worker cache files, once their (dying) workers let go of them."""
    deadline = time.monotonic() + 120
    while True:
        try:
            total = 0
            for path in folder.glob("*.sqlite"):
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
                    total += db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
            return total
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
