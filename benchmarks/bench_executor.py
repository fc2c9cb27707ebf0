"""The Ray executor against the local one on the same work: rows/s, rows/s per worker,
and the overhead Ray adds.

Builds a small template bank and index once (local executor, real queries), then runs
the same two stages under each executor, side by side in one process:

- ``match``: documents → matches (the embedder and the FAISS index in each worker);
- ``instantiate``: matches → grounded pairs (the LLM in each worker), with the request
  cache off, so every configuration makes every model call.

Each row of the table is one stage under one executor; ``overhead`` compares a Ray run
with one worker to the local run (reading through Ray Data, shipping batches to an
actor, starting it and loading its model there). On a machine with few cores, two
workers share them: per-worker throughput then falls as the total rises.

    .venv/bin/python benchmarks/bench_executor.py [--documents 48] [--queries 24] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path

from fineinstructions.config import load_config
from fineinstructions.execution.executor import LocalExecutor, RayExecutor
from fineinstructions.execution.index import run_index
from fineinstructions.execution.instantiate import run_instantiate
from fineinstructions.execution.match import run_match
from fineinstructions.execution.templatize import run_templatize
from fineinstructions.io import read_documents

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAGES = ("match", "instantiate")


def write_inputs(folder: Path, queries: int, documents: int) -> tuple[Path, Path]:
    lines = (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    query_file = folder / "queries.jsonl"
    query_file.write_text("".join(line + "\n" for line in lines[:: max(1, len(lines) // queries)][:queries]))
    docs = [d for d in read_documents([DATA / "documents.jsonl"]) if len(d.text) < 6000][:documents]
    document_file = folder / "documents.jsonl"
    document_file.write_text("".join(json.dumps({"id": d.id, "text": d.text, "source": d.source}) + "\n" for d in docs))
    return query_file, document_file


def settings(workers: int, cpus: float) -> list[str]:
    return [f"ray.{s}.actors={workers}" for s in STAGES] + [f"ray.{s}.cpus_per_actor={cpus}" for s in STAGES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=48)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threshold", type=float, default=0.15, help="match.threshold: low, so a small bank gives work")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    quiet = lambda message: None  # noqa: E731
    base = ["instantiate.llm.cache=false", f"match.threshold={args.threshold}", "instantiate.shard_size=4"]
    query_file, document_file = write_inputs(work, args.queries, args.documents)
    config = load_config("embedded", overrides=base)
    print(f"setup: templatize {args.queries} queries and index them (local) in {work}", flush=True)
    run_templatize([query_file], work / "templates", config, show_progress=False, log=quiet)
    run_index([work / "templates"], work / "index", config, show_progress=False, log=quiet)

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    runs: list[tuple[str, int]] = [("local", 1)] + [("ray", n) for n in args.workers]
    table = []
    for kind, workers in runs:
        # The workers share what the local executor had: every CPU but the readers' share.
        per_worker_cpus = math.floor((args.cpus - 0.25) / workers * 100) / 100
        config = load_config("embedded", overrides=base + settings(workers, per_worker_cpus))
        executor = LocalExecutor() if kind == "local" else RayExecutor(config.ray)
        out = work / f"{kind}-{workers}"
        tick = time.monotonic()
        match = run_match([document_file], work / "index", out / "matches", config, executor=executor, show_progress=False, log=quiet)
        match_seconds = time.monotonic() - tick
        tick = time.monotonic()
        pairs = run_instantiate(
            [out / "matches"], [work / "templates"], [document_file], out / "pairs", config,
            executor=executor, show_progress=False, log=quiet,
        )
        pair_seconds = time.monotonic() - tick
        # "busy": the seconds workers spent inside batches, summed over workers.
        table.append((kind, workers, "match", match["match"]["in"], match_seconds, match["match"]["seconds"]))
        table.append((kind, workers, "instantiate", pairs["instantiate"]["in"], pair_seconds, pairs["instantiate"]["seconds"]))
        print(f"  {kind} x{workers}: match {match_seconds:.1f}s, instantiate {pair_seconds:.1f}s", flush=True)
    ray.shutdown()

    local = {stage: seconds for kind, _, stage, _, seconds, _ in table if kind == "local"}
    print()
    print("wall: the stage's time in the driver, worker start-up and model loading included;")
    print("busy: seconds spent inside batches, summed over the workers (rows/s per worker = rows / busy)")
    print(f"{'stage':<12} {'executor':<9} {'workers':>7} {'rows':>5} {'wall s':>7} {'rows/s':>7} {'busy s':>7} {'rows/s per worker':>18} {'wall vs local':>14}")
    for kind, workers, stage, rows, seconds, busy in table:
        rate = rows / seconds if seconds else 0.0
        versus = f"{seconds / local[stage]:.2f}x" if kind != "local" else "1.00x"
        per_worker = rows / busy if busy else 0.0
        print(f"{stage:<12} {kind:<9} {workers:>7} {rows:>5} {seconds:>7.1f} {rate:>7.2f} {busy:>7.1f} {per_worker:>18.2f} {versus:>14}")
    reference = rows_of(work / "local-1")
    for kind, workers in runs[1:]:
        same = rows_of(work / f"{kind}-{workers}") == reference
        print(f"{kind} x{workers}: matches and pairs {'identical to' if same else 'DIFFERENT from'} the local executor's")
    print(f"(a stage's time includes starting its workers and loading their models; outputs in {work})")


def rows_of(folder: Path) -> list:
    from fineinstructions.io import read_rows
    from fineinstructions.records import MatchRow, PairRow

    found = []
    for name, row_type in (("matches", MatchRow), ("pairs", PairRow)):
        parts = sorted((folder / name).glob("part-*"))
        found.append(sorted((r for r in read_rows(parts, row_type)), key=lambda r: (r.document_id, r.template_id)) if parts else [])
    return found

if __name__ == "__main__":
    main()
