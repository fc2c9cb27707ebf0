"""Calibrate the match threshold of an embedder on real documents and a real bank.

A threshold is right when the templates above it could actually be instantiated from
the document (its variables filled, its answer found in the text) and few that could
are below it. Without labelled pairs that cannot be measured, so calibration is done
by hand, in two steps:

1. ``sample``: embed the documents and the bank's descriptions, search the top
   candidates of every document vector, print the score distribution, and write a
   stratified sample of (document passage, template, score) pairs, the same number
   per score band, for a person to judge;
2. ``score``: read the judged sample (a ``compatible`` field, true or false, added to
   each line) and print, for each candidate threshold, the estimated precision of the
   candidates at or above it (each band's judged precision weighted by how many
   candidates it holds) and the share of document vectors and documents that would keep
   a candidate.

    .venv/bin/python benchmarks/calibrate_threshold.py sample --index INDEX_DIR \\
        --templates TEMPLATES_DIR ../shared/data/documents.jsonl -o pairs.jsonl
    .venv/bin/python benchmarks/calibrate_threshold.py score pairs.jsonl --index INDEX_DIR \\
        ../shared/data/documents.jsonl

The passage shown for a pair is the part of the document the retrieving vector weighs
most: the whole start for the global vector, a window around the kernel centre for a
local one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fineinstructions.config import load_config
from fineinstructions.io import read_documents, read_rows
from fineinstructions.models.embedder import make_embedder
from fineinstructions.models.index import TemplateIndex
from fineinstructions.records import TemplateRow
from fineinstructions.stages.match import Matcher

BANDS = [0.0, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 1.01]


def top_candidates(index_dir: str, documents: list, candidates: int):
    config = load_config()
    embedder = make_embedder(config.embed)
    index = TemplateIndex.load(index_dir, embedder=embedder.identity)
    matcher = Matcher(embedder, index, threshold=-1.0, candidates=candidates)
    scores, positions = [], []
    for start in range(0, len(documents), 32):
        vectors, _ = matcher.document_vectors(documents[start : start + 32])
        s, p = index.search(vectors.reshape(-1, vectors.shape[2]), candidates)
        scores.append(s.reshape(vectors.shape[0], vectors.shape[1], -1))
        positions.append(p.reshape(vectors.shape[0], vectors.shape[1], -1))
    return index, np.concatenate(scores), np.concatenate(positions)


def passage(text: str, chunk: int, chunks: int, width: int = 900) -> str:
    if chunk == 0:
        return text[:width]
    centre = int(len(text) * chunk / (chunks + 1))
    start = max(0, centre - width // 2)
    return ("…" if start else "") + text[start : start + width] + "…"


def sample(args) -> None:
    documents = list(read_documents(args.documents))
    index, scores, positions = top_candidates(args.index, documents, args.candidates)
    templates = {row.id: row for row in read_rows([args.templates], TemplateRow)}
    top1 = scores[:, :, 0].ravel()
    print(f"{len(documents)} documents, {scores.shape[1]} vectors each, {len(index)} templates")
    print("best score per vector, percentiles 10/25/50/75/90:", np.percentile(top1, [10, 25, 50, 75, 90]).round(3))
    rng = np.random.default_rng(args.seed)
    rows = []
    for low, high in zip(BANDS, BANDS[1:], strict=False):
        d, v, c = np.nonzero((scores >= low) & (scores < high))
        print(f"band [{low:.2f}, {high:.2f}): {len(d)} (vector, template) pairs")
        for i in rng.choice(len(d), min(args.per_band, len(d)), replace=False):
            document = documents[d[i]]
            template = templates[str(index.ids[positions[d[i], v[i], c[i]]])]
            rows.append(
                {
                    "document_id": document.id,
                    "chunk": int(v[i]),
                    "template_id": template.id,
                    "score": round(float(scores[d[i], v[i], c[i]]), 4),
                    "passage": passage(document.text, int(v[i]), scores.shape[1] - 1),
                    "template": template.template,
                    "description": template.compatible_document_description,
                }
            )
    rng.shuffle(rows)  # the judge should not see the score order
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} pairs to {args.output}; add \"compatible\": true/false to each line")


def score(args) -> None:
    judged = [json.loads(line) for line in open(args.pairs, encoding="utf-8") if line.strip()]
    labelled = [(row["score"], bool(row["compatible"])) for row in judged if "compatible" in row]
    print(f"{len(labelled)} judged pairs, {sum(c for _, c in labelled)} compatible")
    documents = list(read_documents(args.documents))
    _, scores, _ = top_candidates(args.index, documents, args.candidates)
    top1 = scores[:, :, 0]
    # Bands were sampled equally, but hold very different numbers of candidates: the
    # precision of everything above a threshold weighs each band by its population.
    bands = []
    for low, high in zip(BANDS, BANDS[1:], strict=False):
        band = [c for s, c in labelled if low <= s < high]
        population = int(((scores >= low) & (scores < high)).sum())
        precision = sum(band) / len(band) if band else 0.0
        bands.append((low, population, precision))
        print(f"band [{low:.2f}, {high:.2f}): {sum(band)}/{len(band)} judged compatible, {population} candidates")
    print(f"{'threshold':>9} {'precision':>9} {'candidates':>10} {'vectors kept':>12} {'docs kept':>9} {'matches/doc':>11}")
    for threshold in BANDS[1:-1]:
        kept = [(n, p) for low, n, p in bands if low >= threshold]
        total = sum(n for n, _ in kept)
        precision = sum(n * p for n, p in kept) / total if total else float("nan")
        print(
            f"{threshold:>9.3f} {precision:>9.1%} {total:>10} {(top1 >= threshold).mean():>12.1%} "
            f"{(top1 >= threshold).any(axis=1).mean():>9.1%} {(top1 >= threshold).sum(axis=1).mean():>11.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("sample")
    s.add_argument("documents", nargs="+")
    s.add_argument("--index", required=True)
    s.add_argument("--templates", required=True)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--per-band", type=int, default=15)
    s.add_argument("--candidates", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=sample)
    j = commands.add_parser("score")
    j.add_argument("pairs")
    j.add_argument("documents", nargs="+")
    j.add_argument("--index", required=True)
    j.add_argument("--candidates", type=int, default=64)
    j.set_defaults(run=score)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
