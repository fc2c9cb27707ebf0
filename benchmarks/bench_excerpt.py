"""Excerpt expansion speed: time per answer against document size.

Expansion must be linear in the document's length per marker. This prints the time to
expand an answer of 20 markers against documents of growing size built from the real
documents in ../shared/data (or synthetic text when that folder is absent), so the
ratios between sizes show the growth.

    .venv/bin/python benchmarks/bench_excerpt.py
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from fineinstructions.text.excerpt import SearchableDocument, expand_excerpts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "documents.jsonl"


def corpus_text() -> str:
    if DATA.is_file():
        with open(DATA, encoding="utf-8") as handle:
            return "\n\n".join(json.loads(line)["text"] for line in handle)
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "the", "of", "and", "tea", "rain"]
    return " ".join(rng.choice(words) for _ in range(200_000))


def answer_for(document: str, rng: random.Random, markers: int = 20) -> str:
    """20 markers quoting real spans near the end (the worst case for a forward scan),
    with prefixes and suffixes of 4-6 words, plus two that cannot resolve."""
    parts = []
    words = document.split()
    for _ in range(markers - 2):
        i = rng.randrange(int(len(words) * 0.8), len(words) - 20)
        prefix = " ".join(words[i : i + 5])
        suffix = " ".join(words[i + 12 : i + 16])
        parts.append(f"<excerpt>{prefix}<...>{suffix}</excerpt>")
    parts.append("<excerpt>no such words anywhere in it<...>at all</excerpt>")
    parts.append(f"<excerpt>{words[0]}<...>{words[1]}</excerpt>")
    return " Also: ".join(parts)


def measure(document: str, answer: str, repeats: int = 5) -> tuple[float, float]:
    cold, warm = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        expand_excerpts(answer, document)
        cold.append(time.perf_counter() - start)
        prepared = SearchableDocument(document)
        start = time.perf_counter()
        expand_excerpts(answer, prepared)
        warm.append(time.perf_counter() - start)
    return statistics.median(cold), statistics.median(warm)


def main() -> None:
    text = corpus_text()
    rng = random.Random(0)
    print(
        f"{'document':>10} {'markers':>7} {'resolved':>8} {'expand (s)':>11} "
        f"{'prepared (s)':>13} {'s per MB':>9}"
    )
    for megabytes in (0.25, 0.5, 1.0, 2.0, 4.0):
        size = int(megabytes * 1_000_000)
        document = (text * (size // len(text) + 1))[:size]
        answer = answer_for(document, rng)
        cold, warm = measure(document, answer)
        resolved = sum(span is not None for span in expand_excerpts(answer, document).spans)
        print(
            f"{megabytes:>8.2f}MB {20:>7} {resolved:>8} {cold:>11.4f} {warm:>13.4f} "
            f"{cold / megabytes:>9.4f}"
        )
    print("linear growth shows as a flat 's per MB' column")


if __name__ == "__main__":
    main()
