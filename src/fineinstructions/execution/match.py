"""Run the match stage: stream documents through the embedder and the template index.

Documents are read in batches of ``match.batch_size``; each batch is embedded (all its
windows batched together), its ``K + 1`` vectors per document searched in one call, and
the chosen matches appended to sharded output. ``stats.json`` holds the counts, the
distribution of matches per document, the achieved and target complexity distributions
and documents/s.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.templatize import batched
from fineinstructions.index import TemplateIndex
from fineinstructions.io import ReadStats, ShardWriter, read_documents, write_json
from fineinstructions.io.writers import prepare_output_dir
from fineinstructions.models.embedder import Embedder
from fineinstructions.records import DocumentRow, MatchRow
from fineinstructions.stages.match import Matcher


def target_distribution(setting: str, bank: np.ndarray) -> dict[int, float] | None:
    """``'bank'`` → None (the matcher uses the bank's own), ``'uniform'`` → equal weight
    on each complexity in the bank, otherwise a JSON file ``{"1": 0.7, "2": 0.2, ...}``."""
    if setting == "bank":
        return None
    if setting == "uniform":
        return {int(c): 1.0 for c in np.unique(bank)}
    path = Path(setting)
    if not path.is_file():
        raise UserError(
            f"match.complexity_distribution is {setting!r}: not 'bank', 'uniform' or an existing file.\n"
            '  fix: give a JSON file such as {"1": 0.6, "2": 0.3, "3": 0.1}'
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weights = {int(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise UserError(
            f"{path}: not a complexity distribution ({error}).\n"
            '  fix: a JSON object of complexity → weight, such as {"1": 0.6, "2": 0.3, "3": 0.1}'
        ) from None
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise UserError(f"{path}: weights must be non-negative with at least one positive")
    return weights


def run_match(
    document_paths: Sequence[str | Path],
    index_dir: str | Path,
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    limit: int | None = None,
    embedder: Embedder | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Match the documents in ``document_paths`` against the index at ``index_dir``,
    writing MatchRow shards to ``output``. Returns the stats also in ``output/stats.json``."""
    out = prepare_output_dir(output, overwrite=overwrite)
    if embedder is None:
        from fineinstructions.models.embedder import make_embedder

        embedder = make_embedder(config.embed)
    index = TemplateIndex.load(index_dir, embedder=embedder.identity, nprobe=config.index.nprobe)
    section = config.match
    matcher = Matcher(
        embedder,
        index,
        threshold=section.threshold,
        num_chunks=config.embed.num_chunks,
        sigma=config.embed.sigma,
        alpha=config.embed.alpha,
        candidates=section.candidates,
        target=target_distribution(section.complexity_distribution, index.complexity),
        seed=section.seed,
    )
    log(
        f"match: {len(index)} templates ({index.settings.kind} index), embedder {embedder.identity.model}, "
        f"threshold {matcher.threshold}, {config.embed.num_chunks + 1} vectors per document"
    )
    read_stats = ReadStats()
    documents: Iterable[DocumentRow] = read_documents(
        document_paths, fields=config.input.field_mapping(), stats=read_stats, on_error=config.input.on_error
    )
    if limit is not None:
        documents = itertools.islice(documents, limit)
    progress = Progress("match", unit="docs", enabled=show_progress)
    totals = Counter()
    per_document: Counter = Counter()  # matches -> documents
    chosen: Counter = Counter()
    templates_used: set[str] = set()
    seconds = 0.0
    with ShardWriter(out, MatchRow, format=config.output.format, rows_per_shard=config.output.rows_per_shard) as writer:
        for batch in batched(documents, section.batch_size):
            tick = time.monotonic()
            result = matcher(batch)
            seconds += time.monotonic() - tick
            writer.write(result.rows)
            counts = Counter(row.document_id for row in result.rows)
            per_document.update(counts[d.id] for d in batch)
            chosen.update(result.chosen_complexity)
            templates_used.update(row.template_id for row in result.rows)
            totals.update(
                documents=result.documents,
                matched=result.matched_documents,
                matches=len(result.rows),
                vectors=result.vectors,
                no_candidate=result.no_candidate,
                all_taken=result.all_taken,
                off_target=result.off_target,
                text_tokens=result.text_tokens,
                tokens_seen=result.tokens_seen,
                truncated=result.truncated_documents,
            )
            progress.update(
                result.documents,
                tokens=result.tokens_seen,
                extra=f"{totals['matches']} matches, {totals['matched']} docs matched",
            )
    progress.close()
    docs = totals["documents"]
    chosen_total = sum(chosen.values())
    stats = {
        "read_documents": read_stats.as_dict(),
        "match": {
            "in": docs,
            "out": totals["matched"],
            "skipped": {"no_match": docs - totals["matched"]} if docs - totals["matched"] else {},
            "failed": {},
            "matches": totals["matches"],
            "matched_fraction": round(totals["matched"] / docs, 4) if docs else None,
            "matches_per_document": round(totals["matches"] / docs, 3) if docs else None,
            "matches_per_document_histogram": {str(k): per_document[k] for k in sorted(per_document)},
            "distinct_templates": len(templates_used),
            "vectors": totals["vectors"],
            "vectors_without_match": {
                "no_candidate_above_threshold": totals["no_candidate"],
                "candidates_already_chosen": totals["all_taken"],
                "no_candidate_in_target_complexities": totals["off_target"],
            },
            "threshold": matcher.threshold,
            "candidates_per_vector": matcher.candidates,
            "vectors_per_document": config.embed.num_chunks + 1,
            "embedder": embedder.identity.model,
            "index_kind": index.settings.kind,
            "templates_in_index": len(index),
            "seed": section.seed,
            "text_tokens": totals["text_tokens"],
            "tokens_seen": totals["tokens_seen"],
            "truncated_documents": totals["truncated"],
            "seconds": round(seconds, 2),
            "documents_per_s": round(docs / seconds, 2) if seconds else None,
            "tokens_per_s": round(totals["tokens_seen"] / seconds, 1) if seconds else None,
        },
        "complexity": {
            "target": {str(k): round(v, 4) for k, v in matcher.target.items()},
            "chosen": {str(k): round(chosen[k] / chosen_total, 4) for k in sorted(chosen)} if chosen_total else {},
            "chosen_counts": {str(k): chosen[k] for k in sorted(chosen)},
        },
    }
    write_json(stats, out / "stats.json")
    return stats
