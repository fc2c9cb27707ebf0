"""Query deduplication: the package's hand-written MinHash/LSH against datasketch's, side by side.

Builds a stream of ~50K queries from the real queries in ../shared/data/queries.jsonl
(read at run time): the 4,110 real ones plus, drawn with a fixed seed, copies differing
only in case and spacing (exact duplicates), copies with a one-word or one-character
edit (mostly near duplicates) and splices of two queries (mostly new). Each
implementation deduplicates the stream; printed for each: queries/s, peak and retained
memory (tracemalloc, in a second pass), memory per kept query, how many it kept and
dropped; then how often the two agree, and on a prefix of the stream, how many near
duplicates each one's LSH missed against an exhaustive comparison of its own signatures.

Rows: the package's ``Deduplicator``; the same decisions made with datasketch's
MinHash + MinHashLSH (with the same banding, defined below, needs ``pip install
datasketch``); and the package's one with the banding it had before (11 bands of 11
rows, the S-curve threshold closest to 0.8), to show what the banding alone changes.

    .venv/bin/python benchmarks/bench_dedup.py [--queries 50000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from fineinstructions.stages import dedup

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT.parent / "shared" / "data" / "queries.jsonl"


def read_queries(path: Path) -> list[str]:
    if not path.is_file():
        sys.exit(f"the real queries are not at {path}; pass --data")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def perturbed_stream(real: list[str], size: int, seed: int = 0) -> list[str]:
    """The real queries plus variants of them up to ``size`` queries, shuffled."""
    rng = random.Random(seed)
    stream = list(real)
    while len(stream) < size:
        text = rng.choice(real)
        words = text.split()
        kind = rng.random()
        if kind < 0.2:  # exact duplicate: case and spacing only
            stream.append(("  " if rng.random() < 0.5 else "") + (text.upper() if rng.random() < 0.5 else text.lower()))
        elif kind < 0.45 and len(words) > 2:  # one word dropped, repeated or replaced
            i = rng.randrange(len(words))
            edit = rng.choice(("drop", "repeat", "replace"))
            if edit == "drop":
                words.pop(i)
            elif edit == "repeat":
                words.insert(i, words[i])
            else:
                words[i] = rng.choice(rng.choice(real).split())
            stream.append(" ".join(words))
        elif kind < 0.6 and len(text) > 3:  # a typo
            i = rng.randrange(len(text))
            stream.append(text[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + text[i + 1 :])
        else:  # a splice: the start of one query and the end of another, mostly new
            other = rng.choice(real).split()
            cut = max(1, len(words) // 2)
            stream.append(" ".join(words[:cut] + other[len(other) // 2 :]))
    stream = stream[:size]
    rng.shuffle(stream)
    return stream


class DatasketchDeduplicator:
    """The package's ``Deduplicator`` (same normalisation, shingles, exact digests and
    verification of candidates on full signatures) with datasketch's MinHash and
    MinHashLSH in place of the hand-written signatures and bands."""

    def __init__(self, *, near_threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5,
                 seed: int = 0, banding: tuple[int, int] | None = None) -> None:
        from datasketch import MinHash, MinHashLSH

        self.near_threshold, self.num_perm, self.shingle_size = near_threshold, num_perm, shingle_size
        self._empty = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32, scheme="affine32")
        self._index = MinHashLSH(num_perm=num_perm, params=banding or dedup.lsh_bands(num_perm, near_threshold))
        self.bands, self.rows = self._index.b, self._index.r
        self._digests: set[bytes] = set()
        self._signatures = np.empty((0, num_perm), dtype=np.uint32)
        self.kept = 0

    def _minhash(self, normalized: str):
        minhash = self._empty.copy()
        minhash.update_batch([s.encode("utf-8") for s in dedup.shingle_set(normalized, self.shingle_size)])
        return minhash

    def signature(self, text: str) -> np.ndarray:
        return self._minhash(dedup.normalize_query(text)).hashvalues

    def check(self, text: str) -> str | None:
        normalized = dedup.normalize_query(text)
        digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest()
        if digest in self._digests:
            return dedup.EXACT_DUPLICATE
        minhash = self._minhash(normalized)
        candidates = self._index.query(minhash)
        if candidates:
            rows = self._signatures[sorted(candidates)]
            if ((rows == minhash.hashvalues).mean(axis=1) >= self.near_threshold).any():
                return dedup.NEAR_DUPLICATE
        self._digests.add(digest)
        if self.kept == len(self._signatures):  # grow by doubling
            grown = np.empty((max(64, 2 * self.kept), self.num_perm), dtype=np.uint32)
            grown[: self.kept] = self._signatures[: self.kept]
            self._signatures = grown
        self._signatures[self.kept] = minhash.hashvalues
        self._index.insert(self.kept, minhash, check_duplication=False)
        self.kept += 1
        return None


def rebanded(deduplicator, bands: int, rows: int):
    """The package's deduplicator switched to ``bands`` bands of ``rows`` rows."""
    deduplicator.bands, deduplicator.rows = bands, rows
    deduplicator._buckets = [{} for _ in range(bands)]
    return deduplicator


def timed_run(factory, stream: list[str]) -> tuple[list[str | None], float, int]:
    deduplicator = factory()
    started = time.perf_counter()
    decisions = [deduplicator.check(text) for text in stream]
    return decisions, time.perf_counter() - started, deduplicator.kept


def memory_run(factory, stream: list[str]) -> tuple[int, int]:
    """(peak, retained) bytes allocated while deduplicating ``stream``."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    deduplicator = factory()
    for text in stream:
        deduplicator.check(text)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del deduplicator
    return peak - before, current - before


def exhaustive_misses(factory, stream: list[str], threshold: float) -> tuple[int, int]:
    """(near duplicates found by comparing each query's signature with every kept one,
    how many of those the implementation's own LSH missed), on ``stream``."""
    deduplicator = factory()
    probe = factory()
    kept = np.empty((len(stream), deduplicator.num_perm), dtype=np.uint32)
    count = truth = missed = 0
    for text in stream:
        decision = deduplicator.check(text)
        if decision == "exact_duplicate":
            continue
        signature = probe.signature(text)
        is_near = count > 0 and bool(((kept[:count] == signature).mean(axis=1) >= threshold).any())
        if is_near:
            truth += 1
            missed += decision is None
        if decision is None:
            kept[count] = signature
            count += 1
    return truth, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=50_000, help="length of the stream")
    parser.add_argument("--data", type=Path, default=QUERIES, help="the real queries (JSONL with text)")
    parser.add_argument("--exhaustive", type=int, default=5_000, help="prefix checked exhaustively for LSH misses")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    args = parser.parse_args()

    real = read_queries(args.data)
    stream = perturbed_stream(real, args.queries)
    print(f"{len(stream):,} queries ({len(real):,} real + variants), threshold {args.threshold}, "
          f"{args.num_perm} permutations, Python {sys.version.split()[0]}")

    started = time.perf_counter()
    try:
        import datasketch  # its import, with scipy's, is paid once per process
    except ImportError:
        sys.exit("this benchmark compares with datasketch: pip install 'datasketch>=2.0'")

    print(f"import datasketch: {time.perf_counter() - started:.2f} s (version {datasketch.__version__})")
    settings = dict(near_threshold=args.threshold, num_perm=args.num_perm)
    factories = {
        "hand-written": lambda: dedup.Deduplicator(**settings),
        "datasketch": lambda: DatasketchDeduplicator(**settings),
        "hand-written, 11x11": lambda: rebanded(dedup.Deduplicator(**settings), 11, 11),
    }
    results = {}
    header = f"{'implementation':<22}{'queries/s':>11}{'kept':>8}{'exact':>8}{'near':>8}{'peak MB':>9}{'kept MB':>9}{'B/kept':>8}{'bands':>7}"
    print(header)
    for name, factory in factories.items():
        timed_run(factory, stream[:2000])  # warm up (imports, first allocations)
        # the better of two runs: the machine may be shared
        (decisions, seconds, kept), (_, again, _) = timed_run(factory, stream), timed_run(factory, stream)
        seconds = min(seconds, again)
        peak, retained = memory_run(factory, stream)
        counts = Counter(decisions)
        results[name] = (decisions, factory)
        probe = factory()
        print(
            f"{name:<22}{len(stream) / seconds:>11,.0f}{kept:>8,}{counts['exact_duplicate']:>8,}"
            f"{counts['near_duplicate']:>8,}{peak / 1e6:>9.1f}{retained / 1e6:>9.1f}"
            f"{retained / kept:>8,.0f}{f'{probe.bands}x{probe.rows}':>7}"
        )

    (first, (a, _)), (second, (b, _)) = list(results.items())[:2]
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"agreement: {same / len(stream):.4f} of decisions identical ({len(stream) - same:,} differ)")
    differ = Counter((x or "kept", y or "kept") for x, y in zip(a, b, strict=True) if x != y)
    for (x, y), n in differ.most_common():
        print(f"  {first}: {x:<15} {second}: {y:<15} {n:,}")
    prefix = stream[: args.exhaustive]
    for name, (_, factory) in results.items():
        truth, missed = exhaustive_misses(factory, prefix, args.threshold)
        print(f"exhaustive check of the first {len(prefix):,}: {name} missed {missed} of {truth} near duplicates")


if __name__ == "__main__":
    main()
