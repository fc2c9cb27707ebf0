"""Template index: recall@6 and speed of IVF / IVF-PQ / HNSW against exact search.

Synthetic L2-normalised vectors stand in for description embeddings. Real embeddings
are clustered (descriptions of similar documents sit together) and vary along far fewer
directions than they have dimensions, so the bank is drawn around random centres (one
per 200 templates), varying mostly within a ``--rank``-dimensional subspace plus a little
isotropic noise (cosine to the centre about 0.7); queries are fresh draws from the same
centres, as documents are. Pass
``--uniform`` for structureless vectors (the worst case for any partitioned index).

For each size: exact search (``IndexFlatIP``) gives the true top 6; each approximate
index is built the way ``fineinstructions index`` builds it (default ``nlist``, training
on a sample of ``--train-size``, then adding in batches) and searched with a sweep of ``nprobe`` / ``efSearch``. Printed:
recall@6, queries/s (queries searched in batches of 256, as matching does), the speed-up
over exact search, build seconds and bytes per template (the serialised index).

    .venv/bin/python benchmarks/bench_index.py                 # 100K and 1M, d = 384
    .venv/bin/python benchmarks/bench_index.py --sizes 100000 --dim 1024
    .venv/bin/python benchmarks/bench_index.py --vectors my_embeddings.npy   # your own bank
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np

from fineinstructions.models.embedder import EmbedderIdentity
from fineinstructions.models.index import IndexBuilder, settings_for

K = 6


def synthetic(count: int, dim: int, space: tuple | None, rng: np.random.Generator, spread: float) -> np.ndarray:
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        if space is None:
            block = rng.standard_normal((n, dim), dtype=np.float32)
        else:
            centres, basis = space
            rank = basis.shape[0]
            block = (
                centres[rng.integers(0, len(centres), n)]
                + spread * (rng.standard_normal((n, rank), dtype=np.float32) / np.sqrt(rank, dtype=np.float32)) @ basis
                + 0.2 * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim, dtype=np.float32)
            )
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + n] = block
    return out


def timed_search(index, queries: np.ndarray, batch: int = 256) -> tuple[np.ndarray, float]:
    found = []
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        found.append(index.search(queries[start : start + batch], K)[1])
    return np.concatenate(found), time.perf_counter() - started


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=False))
    return hits / truth.size


def build(kind: str, bank: np.ndarray, train_size: int, extra: dict) -> tuple[object, float]:
    config = SimpleNamespace(
        kind=kind, flat_limit=0, ivfpq_above=0, nlist=extra.get("nlist"), nprobe=1, pq_bytes=extra.get("pq_bytes"),
        hnsw_m=extra.get("hnsw_m", 32), hnsw_ef_search=64,
    )
    identity = EmbedderIdentity("synthetic", "synthetic", bank.shape[1], 0, (1.0,))
    rng = np.random.default_rng(1)
    sample = bank[rng.choice(len(bank), min(train_size, len(bank)), replace=False)]
    settings = settings_for(len(bank), bank.shape[1], len(sample), config)
    started = time.perf_counter()
    builder = IndexBuilder(settings, identity)
    if builder.needs_training:
        builder.train(sample)
    for start in range(0, len(bank), 50_000):
        block = bank[start : start + 50_000]
        builder.add(block, [""] * len(block), [1] * len(block))
    return builder.index, time.perf_counter() - started


def run(size: int, dim: int, queries_count: int, uniform: bool, train_size: int, spread: float, rank: int, kinds: list[str], vectors: str | None = None) -> None:
    rng = np.random.default_rng(0)
    if vectors:
        # Your own embeddings (an .npy of shape (n, d)): queries are held-out rows.
        data = np.load(vectors).astype(np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        order = rng.permutation(len(data))
        queries, bank = data[order[:queries_count]], data[order[queries_count:]]
        size, dim = bank.shape
        shape = f"vectors from {vectors}"
    else:
        space = None
        if not uniform:
            centres = rng.standard_normal((max(size // 200, 10), dim), dtype=np.float32) / np.sqrt(dim, dtype=np.float32)
            basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # (rank, dim), orthonormal rows
            space = (centres, basis)
        bank = synthetic(size, dim, space, rng, spread)
        queries = synthetic(queries_count, dim, space, rng, spread)
        shape = "uniform" if uniform else f"{len(space[0]):,} clusters + {rank}-d variation"
    print(f"\n## {size:,} templates, d = {dim}, {shape}, {queries_count:,} queries")
    import faiss

    exact = faiss.IndexFlatIP(dim)
    exact.add(bank)
    truth, exact_s = timed_search(exact, queries)
    exact_qps = queries_count / exact_s
    print(f"{'index':<34} {'recall@6':>8} {'queries/s':>10} {'speed-up':>8} {'build s':>8} {'B/template':>10}")
    print(f"{'flat (exact)':<34} {1.0:>8.3f} {exact_qps:>10,.0f} {1.0:>8.1f} {0:>8} {index_bytes(exact) / size:>10,.0f}")
    del exact
    configs = [
        ("ivf", {}, "nprobe", [16, 32, 64, 128, 256]),
        ("ivfsq", {}, "nprobe", [16, 32, 64, 128, 256]),
        ("ivfpq", {}, "nprobe", [16, 64]),
        ("hnsw", {"hnsw_m": 32}, "efSearch", [64, 128, 256]),
    ]
    configs = [c for c in configs if c[0] in kinds]
    for kind, extra, knob, values in configs:
        index, build_s = build(kind, bank, train_size, extra)
        per_template = index_bytes(index) / size
        for value in values:
            if knob == "nprobe":
                faiss.extract_index_ivf(index).nprobe = value
            else:
                index.hnsw.efSearch = value
            found, seconds = timed_search(index, queries)
            qps = queries_count / seconds
            nlist = f"nlist={faiss.extract_index_ivf(index).nlist} " if kind.startswith("ivf") else ""
            label = f"{kind} {nlist}{knob}={value}"
            print(f"{label:<34} {recall(found, truth):>8.3f} {qps:>10,.0f} {qps / exact_qps:>8.1f} {build_s:>8.1f} {per_template:>10,.0f}")
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--spread", type=float, default=1.0, help="variation around a centre (1.0: cosine to it about 0.7)")
    parser.add_argument("--rank", type=int, default=64, help="dimensions the variation around centres spans")
    parser.add_argument("--uniform", action="store_true")
    parser.add_argument("--kinds", nargs="+", default=["ivf", "ivfsq", "ivfpq", "hnsw"], help="index kinds to compare with exact search")
    parser.add_argument("--vectors", help="an .npy of your own embeddings (n, d) instead of synthetic ones")
    args = parser.parse_args()
    import faiss

    print(f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    if args.vectors:
        run(0, 0, args.queries, False, args.train_size, 0, 0, args.kinds, args.vectors)
        return
    for size in args.sizes:
        run(size, args.dim, args.queries, args.uniform, args.train_size, args.spread, args.rank, args.kinds)


if __name__ == "__main__":
    main()
