"""How fast does ``fineinstructions index`` build, and does its memory stay flat in the bank size?

The benchmark writes a synthetic bank in another schema than this package's (fields
``pattern`` and ``doc_kind``, no ids, Parquet row groups of 10K rows as a released bank
has them, 1 % invalid templates and 1 % exact repeats), then builds the index with the
real ``run_index`` (reading, the pipeline's template rules, the embed stage's shards, the
repeat check, training and adding) and a fast stand-in embedder: each description's
vector is its 64-byte BLAKE2b digest, so the figures measure the build, not a model. With
a real embedder the embed step dominates (``embed_seconds`` in the index's stats.json).

Each size runs in a fresh process, which reports its peak RSS; the index file's size is
reported beside it, so what the bank size adds apart from the index itself shows. A
second fresh process loads the finished index as a ``match`` worker does and reports
what that adds to its RSS (the FAISS index, the template ids, and the details match rows
carry: template text, variables, query id).

    python benchmarks/bench_index_build.py                         # 100K and 1M, ivfpq
    python benchmarks/bench_index_build.py --sizes 100000 --kind flat
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIMENSION = 64
ROW_GROUP = 10_000
VERBS = ("repair", "paint", "clean", "insure", "photograph", "sell", "store", "measure", "ship", "heat")
THINGS = ("roof", "bicycle", "violin", "garden shed", "laptop", "kayak", "fence", "oven", "aquarium", "tent")


def write_bank(path: Path, count: int) -> None:
    """``count`` rows: unique valid templates, every 100th one invalid (no variables),
    every 100th (offset 50) a repeat of the row before it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, count, ROW_GROUP):
        patterns, kinds = [], []
        for i in range(start, min(count, start + ROW_GROUP)):
            verb, thing = VERBS[i % 10], THINGS[(i // 10) % 10]
            if i % 100 == 0:
                patterns.append(f"How do I {verb} my {thing}? ({i})")  # no variables
            elif i % 100 == 50:
                patterns.append(patterns[-1])
                kinds.append(kinds[-1])
                continue
            else:
                patterns.append(f"How do I {verb} a <fi>{thing}</fi> that is <fi>condition {i}</fi>?")
            kinds.append(f"A guide to caring for a {thing} (case {i}).")
        table = pa.table({"pattern": patterns, "doc_kind": kinds})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


class DigestEmbedder:
    """A fast stand-in: a text's vector is its 64-byte BLAKE2b digest, L2-normalised."""

    dimension = DIMENSION

    def __init__(self) -> None:
        from fineinstructions.models.embedder import EmbedderIdentity

        self.identity = EmbedderIdentity(name="digest-64", model="digest-64", dimension=DIMENSION, max_seq_length=512,
                                         probe=(0.0, 0.0, 0.0))

    def embed(self, texts):
        raw = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=64).digest() for t in texts)
        vectors = np.frombuffer(raw, dtype=np.int8).reshape(len(texts), DIMENSION).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def one(count: int, kind: str) -> dict:
    from fineinstructions.config import load_config
    from fineinstructions.execution.index import run_index

    work = Path(tempfile.mkdtemp(prefix=f"bank-{count}-"))
    bank = work / "bank.parquet"
    write_bank(bank, count)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    config = load_config("embedded", overrides=[
        "input.templates.template_field=pattern", "input.templates.description_field=doc_kind", f"index.kind={kind}",
    ])
    tick = time.monotonic()
    stats = run_index([bank], work / "index", config, embedder=DigestEmbedder(), show_progress=False, log=lambda m: None)
    seconds = time.monotonic() - tick
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    index_bytes = (work / "index" / "index.faiss").stat().st_size
    step = stats["index"]
    return {
        "templates": count,
        "kind": step["kind"],
        "indexed": step["out"],
        "skipped": step["skipped"],
        "seconds": round(seconds, 1),
        "rows_per_s": round(count / seconds),
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_before_build_mb": round(before / 2**20, 1),
        "index_mb": round(index_bytes / 2**20, 1),
        "rss_less_index_mb": round((peak - index_bytes) / 2**20, 1),
        "folder": str(work),
    }


def load(folder: str) -> dict:
    """What loading the index folder adds to a fresh process's RSS."""
    from fineinstructions.models.index import TemplateIndex

    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()

    import faiss  # noqa: F401 (imported before measuring: the load alone is measured)
    import pyarrow.parquet  # noqa: F401
    before = rss()
    index = TemplateIndex.load(folder)
    return {"templates": len(index), "load_mb": round((rss() - before) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kind", default="ivfpq", choices=["auto", "flat", "ivf", "ivfsq", "ivfpq", "hnsw"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.kind)))
        return
    if args.load:
        print(json.dumps(load(args.load)))
        return
    header = (f"{'templates':>10} {'kind':>6} {'indexed':>9} {'seconds':>8} {'rows/s':>8} {'peak RSS MB':>12} "
              f"{'index MB':>9} {'RSS-index MB':>13} {'match load MB':>14}")
    print(header)
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(size), "--kind", args.kind],
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        loaded = subprocess.run([sys.executable, __file__, "--load", str(Path(r["folder"]) / "index")],
                                capture_output=True, text=True, check=True)
        m = json.loads(loaded.stdout.strip().splitlines()[-1])
        print(f"{r['templates']:>10} {r['kind']:>6} {r['indexed']:>9} {r['seconds']:>8} {r['rows_per_s']:>8} "
              f"{r['peak_rss_mb']:>12} {r['index_mb']:>9} {r['rss_less_index_mb']:>13} {m['load_mb']:>14}", flush=True)
        print(f"           skipped: {r['skipped']}", flush=True)


if __name__ == "__main__":
    main()
