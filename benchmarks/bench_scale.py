"""Does the pipeline scale? instantiate + judge + pack over 10K, 100K and 1M matches.

The benchmark makes its own corpus (documents of eight distinct sentences) and match
shards (six templates per document, written by a synthetic match stage through the real
runner, so they carry markers and pieces like ``match``'s), then runs the real
``instantiate``, ``judge`` and ``pack`` with the ``openai`` backend against a stub
OpenAI-compatible server on 127.0.0.1 (``stub_server.py``, in its own process) that
answers with valid grounded JSON quoting the document it is given, and with scores.

Each size and executor runs in a fresh process, which reports its peak RSS (the driver)
and the peak RSS of its workers (the same process for the local executor; each Ray actor
reports its own). Targets: driver RSS flat within 20 % from 10K to 1M; wall time linear
in matches.

    python benchmarks/bench_scale.py                       # 10K, 100K, 1M; local and ray
    python benchmarks/bench_scale.py --sizes 10000 100000 --executors local
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARD_DOCUMENTS = 500  # documents per shard (instantiate.shard_size): 3,000 matches
WORDS = ("river", "stone", "garden", "engine", "market", "winter", "signal", "harbor", "forest", "ladder",
         "copper", "meadow", "circuit", "lantern", "valley", "orbit", "canvas", "tunnel", "island", "thread")


def sentence(document: int, k: int) -> str:
    a, b, c = WORDS[(document + k) % 20], WORDS[(document * 7 + k * 3) % 20], WORDS[(document * 13 + k * 5) % 20]
    return f"Note {k} of record {document} says the {a} near the {b} keeps the {c} in good order."


def make_corpus(folder: Path, documents: int) -> Path:
    path = folder / "documents.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for d in range(documents):
            text = " ".join(sentence(d, k) for k in range(8))
            out.write(json.dumps({"id": f"doc-{d}", "text": text}) + "\n")
    return path


def make_matches(folder: Path, documents: Path, config) -> Path:
    from fineinstructions.execution.runner import run_stage
    from fineinstructions.execution.shards import plan_corpus
    from fineinstructions.records import MatchRow
    from fineinstructions.stages.base import Stage, StageBatch

    class SyntheticMatch(Stage):
        name = "match"
        output = MatchRow
        batch_size = 1000

        def process(self, batch):
            out = StageBatch()
            for document in batch:
                out.keep(*[
                    MatchRow(document_id=document.id, template_id=f"t{k}", chunk=k, score=0.9, query_id=f"q{k}",
                             template=f"what does <fi>a kind of record</fi> say about its {WORDS[k]} {k}?",
                             variables=("a kind of record",))
                    for k in range(6)
                ])
            return out

    out = folder / "matches"
    run_stage(SyntheticMatch(), lambda: plan_corpus([documents], "documents", SHARD_DOCUMENTS), out, inputs={},
              record_ids=True, show_progress=False, log=lambda m: None)
    (out / "stats.json").write_text("{}")
    return out


def one(matches: int, executor_kind: str, base_url: str) -> dict:
    """One size on one executor, in this (fresh) process."""
    from fineinstructions.config import load_config
    from fineinstructions.execution.executor import make_executor
    from fineinstructions.execution.instantiate import run_instantiate
    from fineinstructions.execution.judge import run_judge
    from fineinstructions.execution.pack import run_pack

    # Relevance scoring embeds every pair with the [embed] model: model compute, like the LLM
    # calls the stub stands in for, not the machinery measured here.
    overrides = [f"instantiate.shard_size={SHARD_DOCUMENTS}", "judge.batch_size=256", "pack.tokenizer=embedded",
                 "instantiate.relevance=false", "judge.min_relevance=null"]
    for stage in ("instantiate", "judge"):
        overrides += [f"{stage}.llm.backend=openai", f"{stage}.llm.model=stub", f"{stage}.llm.base_url={base_url}",
                      f"{stage}.llm.max_concurrency=32", f"{stage}.llm.cache=false", f"{stage}.constraint=schema"
                      if stage == "instantiate" else "judge.format=prompted"]
    if executor_kind == "ray":
        overrides += [f"ray.{s}.{k}" for s in ("instantiate", "judge", "pack") for k in ("actors=2", "cpus_per_actor=1")]
    config = load_config("embedded", overrides=overrides)
    work = Path(tempfile.mkdtemp(prefix=f"scale-{matches}-"))
    documents = make_corpus(work, matches // 6)
    match_dir = make_matches(work, documents, config)
    executor = make_executor(executor_kind, config.ray)
    quiet = dict(show_progress=False, log=lambda m: None)
    worker_rss: list[int] = []
    tick = time.monotonic()
    timings = {}
    try:
        start = time.monotonic()
        pairs = run_instantiate([match_dir], [], [documents], work / "pairs", config, executor=executor, **quiet)
        worker_rss += getattr(executor, "worker_peak_rss", [])
        timings["instantiate"] = time.monotonic() - start
        start = time.monotonic()
        judged = run_judge([work / "pairs"], work / "judged", config, executor=executor, **quiet)
        worker_rss += getattr(executor, "worker_peak_rss", [])
        timings["judge"] = time.monotonic() - start
        start = time.monotonic()
        dataset = run_pack([work / "judged"], [documents], work / "dataset", config, executor=executor, **quiet)
        worker_rss += getattr(executor, "worker_peak_rss", [])
        timings["pack"] = time.monotonic() - start
    finally:
        executor.close()
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "matches": matches,
        "executor": executor_kind,
        "wall_s": round(time.monotonic() - tick, 1),
        "stage_s": {k: round(v, 1) for k, v in timings.items()},
        "driver_rss_mb": round(driver / 2**20, 1),
        "worker_rss_mb": round(max(worker_rss) / 2**20, 1) if worker_rss else round(driver / 2**20, 1),
        "pairs": pairs["instantiate"]["out"],
        "kept": judged["judge"]["out"],
        "packed": dataset["pack"]["out"],
    }


def _serve(ready) -> None:
    sys.path.insert(0, str(HERE))
    import threading

    from stub_server import start_stub_server

    base_url, _ = start_stub_server()
    ready.put(base_url)
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--executors", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.executor, args.base_url)))
        return
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    server = context.Process(target=_serve, args=(ready,), daemon=True)
    server.start()
    base_url = ready.get(timeout=60)
    results = []
    print(f"{'matches':>9} {'executor':>8} {'wall s':>8} {'instantiate':>11} {'judge':>7} {'pack':>6} "
          f"{'driver RSS MB':>13} {'worker RSS MB':>13} {'pairs':>8} {'packed':>8}", flush=True)
    try:
        for executor in args.executors:
            for size in args.sizes:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", str(size), "--executor", executor, "--base-url", base_url],
                    capture_output=True, text=True,
                )
                if done.returncode != 0:
                    print(f"{size:>9} {executor:>8} failed:\n{done.stderr[-3000:]}", flush=True)
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(r)
                s = r["stage_s"]
                print(f"{r['matches']:>9} {r['executor']:>8} {r['wall_s']:>8} {s['instantiate']:>11} {s['judge']:>7} "
                      f"{s['pack']:>6} {r['driver_rss_mb']:>13} {r['worker_rss_mb']:>13} {r['pairs']:>8} {r['packed']:>8}",
                      flush=True)
    finally:
        server.terminate()
    for executor in args.executors:
        rows = [r for r in results if r["executor"] == executor]
        if len(rows) >= 2:
            first, last = rows[0], rows[-1]
            print(f"{executor}: driver RSS {last['driver_rss_mb'] / first['driver_rss_mb']:.2f}x from "
                  f"{first['matches']} to {last['matches']} matches; wall time per match "
                  f"{first['wall_s'] / first['matches'] * 1e6:.0f} → {last['wall_s'] / last['matches'] * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
