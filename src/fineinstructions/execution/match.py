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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.executor import Executor, Files, Items, LocalExecutor, Place
from fineinstructions.execution.progress import Progress
from fineinstructions.index import TemplateIndex
from fineinstructions.io import ReadStats, ShardWriter, write_json
from fineinstructions.io.writers import prepare_output_dir
from fineinstructions.models.embedder import Embedder
from fineinstructions.records import DocumentRow, MatchRow
from fineinstructions.stages.match import Matcher


def _index_meta(index_dir: str | Path) -> dict:
    path = Path(index_dir) / "index.json"
    if not path.is_file():
        return {}  # TemplateIndex.load says what is wrong
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {"count": meta.get("templates"), "kind": meta.get("settings", {}).get("kind")}


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


@dataclass
class MatchTask:
    """Matching one batch of documents, as a worker runs it: the embedder and the index
    are loaded once per worker (see :mod:`.executor`)."""

    config: Config
    index_dir: Path
    embedder: Embedder | None = None  # a ready embedder (tests), used only in this process
    stage: str = "match"

    @property
    def batch_size(self) -> int:
        return self.config.match.batch_size

    def start(self, place: Place) -> Callable[[list[DocumentRow]], dict]:
        return _MatchWorker(make_matcher(self.config, self.index_dir, self.embedder))


def make_matcher(config: Config, index_dir: str | Path, embedder: Embedder | None = None) -> Matcher:
    if embedder is None:
        from fineinstructions.models.embedder import make_embedder

        embedder = make_embedder(config.embed)
    index = TemplateIndex.load(index_dir, embedder=embedder.identity, nprobe=config.index.nprobe)
    section = config.match
    return Matcher(
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


@dataclass
class _MatchWorker:
    matcher: Matcher

    def __call__(self, documents: list[DocumentRow]) -> dict:
        tick = time.monotonic()
        result = self.matcher(documents)
        matcher = self.matcher
        return {
            "result": result,
            "documents": [d.id for d in documents],
            "seconds": time.monotonic() - tick,
            "about": {
                "threshold": matcher.threshold,
                "target": matcher.target,
                "embedder": matcher.embedder.identity.model,
                "index_kind": matcher.index.settings.kind,
                "templates": len(matcher.index),
            },
        }


def run_match(
    document_paths: Sequence[str | Path],
    index_dir: str | Path,
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    limit: int | None = None,
    embedder: Embedder | None = None,
    executor: Executor | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Match the documents in ``document_paths`` against the index at ``index_dir``,
    writing MatchRow shards to ``output``. Returns the stats also in ``output/stats.json``."""
    out = prepare_output_dir(output, overwrite=overwrite)
    executor = executor or LocalExecutor()
    index_meta = _index_meta(index_dir)
    section = config.match
    log(
        f"match: {index_meta.get('count', '?')} templates ({index_meta.get('kind', '?')} index), embedder "
        f"{config.embed.model}, {config.embed.num_chunks + 1} vectors per document, executor {executor.kind}"
    )
    read_stats = ReadStats()
    source = Files(tuple(map(str, document_paths)), "documents", fields=config.input.field_mapping(), on_error=config.input.on_error)
    if limit is not None:
        source = Items(list(itertools.islice(executor.rows(source, read_stats), limit)))
    progress = Progress("match", unit="docs", enabled=show_progress)
    totals = Counter()
    per_document: Counter = Counter()  # matches -> documents
    chosen: Counter = Counter()
    templates_used: set[str] = set()
    seconds = 0.0
    about: dict = {}
    with ShardWriter(out, MatchRow, format=config.output.format, rows_per_shard=config.output.rows_per_shard) as writer:
        for item in executor.map(source, MatchTask(config, Path(index_dir), embedder), read_stats):
            result, about = item["result"], item["about"]
            seconds += item["seconds"]
            writer.write(result.rows)
            counts = Counter(row.document_id for row in result.rows)
            per_document.update(counts[d] for d in item["documents"])
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
    if not about:  # no document at all: describe the matcher from here
        matcher = make_matcher(config, index_dir, embedder)
        about = {
            "threshold": matcher.threshold, "target": matcher.target, "embedder": matcher.embedder.identity.model,
            "index_kind": matcher.index.settings.kind, "templates": len(matcher.index),
        }
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
            "threshold": about["threshold"],
            "candidates_per_vector": section.candidates,
            "vectors_per_document": config.embed.num_chunks + 1,
            "embedder": about["embedder"],
            "index_kind": about["index_kind"],
            "templates_in_index": about["templates"],
            "seed": section.seed,
            "text_tokens": totals["text_tokens"],
            "tokens_seen": totals["tokens_seen"],
            "truncated_documents": totals["truncated"],
            "seconds": round(seconds, 2),
            "documents_per_s": round(docs / seconds, 2) if seconds else None,
            "tokens_per_s": round(totals["tokens_seen"] / seconds, 1) if seconds else None,
        },
        "complexity": {
            "target": {str(k): round(v, 4) for k, v in about["target"].items()},
            "chosen": {str(k): round(chosen[k] / chosen_total, 4) for k in sorted(chosen)} if chosen_total else {},
            "chosen_counts": {str(k): chosen[k] for k in sorted(chosen)},
        },
    }
    write_json(stats, out / "stats.json")
    return stats
