"""``match``: documents → matched templates, one output shard per document piece.

The corpus is cut into pieces of ``instantiate.shard_size`` documents (the pieces every
later stage follows); each worker embeds its piece, searches the index it loaded once and
writes its match shard. Then one reduce step drops documents whose id an earlier shard
already had (identical texts share a content-hash id): it holds 12 bytes per document
(a 64-bit hash of the id and its shard), sorts them once, and rewrites only the shards
that hold a later occurrence.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.corpus import later_duplicates
from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.runner import document_read, read_stats, resolved, run_stage
from fineinstructions.execution.shards import id_hash, plan_corpus
from fineinstructions.io import read_rows, write_json
from fineinstructions.io.writers import write_table
from fineinstructions.records import MatchRow, to_table
from fineinstructions.stages.base import outcomes
from fineinstructions.stages.match import MatchStage, calibrated_threshold


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


def drop_duplicate_ids(folder: ShardFolder, markers: dict[int, dict], format: str) -> int:
    """The reduce step (see the module doc); returns the documents dropped. Idempotent:
    a shard already rewritten carries ``duplicate_hashes`` in its marker."""
    dropped = 0
    for index, duplicates in later_duplicates(folder, markers).items():
        marker = markers[index]
        dropped += len(duplicates)
        if "duplicate_hashes" in marker:
            continue
        rows = list(read_rows([folder.directory / marker["file"]], MatchRow)) if marker.get("file") else []
        keep = [r for r in rows if id_hash(r.document_id) not in duplicates]
        matched = len({r.document_id for r in rows} - {r.document_id for r in keep})
        counts = Counter(marker["counts"])
        counts["out"] -= matched
        counts["skipped:no_match"] -= len(duplicates) - matched
        counts["skipped:duplicate_id"] += len(duplicates)
        counts["matches"] -= len(rows) - len(keep)
        if marker.get("file"):
            write_table(to_table(keep, MatchRow), folder.directory / marker["file"], format)  # type: ignore[arg-type]
        marker.update(counts={k: v for k, v in counts.items() if v}, rows=len(keep), duplicate_hashes=[str(h) for h in duplicates])
        write_json(marker, folder.markers / f"{index:05d}.json")
    return dropped


def run_match(
    document_paths: Sequence[str | Path],
    index_dir: str | Path,
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    limit: int | None = None,
    embedder: Any = None,
    executor: Any = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Match the documents in ``document_paths`` against the index at ``index_dir``,
    writing MatchRow shards to ``output``. Returns the stats also in ``output/stats.json``."""
    from fineinstructions.models.index import TemplateIndex

    # What the index holds, without loading it here (each worker loads it once); a bad
    # folder is said before any work.
    meta, identity, settings, complexity = TemplateIndex.describe(index_dir)
    section = config.match
    target = target_distribution(section.complexity_distribution, complexity)
    stage = MatchStage(config, str(Path(index_dir).resolve()), target=target, embedder=embedder)
    log(
        f"match: {meta['templates']} templates ({settings.kind} index), embedder {identity.model}, "
        f"{config.embed.num_chunks + 1} vectors per document, threshold "
        f"{'calibrated for the embedder' if section.threshold is None else section.threshold}, executor {getattr(executor, 'kind', 'local')}"
    )
    out = Path(output)
    run = run_stage(
        stage,
        lambda: plan_corpus(document_paths, "documents", config.instantiate.shard_size, limit),
        out,
        inputs={"documents": [resolved(p) for p in document_paths], "index": resolved(index_dir), "limit": limit},
        read=document_read(config),
        format=config.output.format,
        record_ids=True,
        overwrite=overwrite,
        executor=executor,
        show_progress=show_progress,
        unit="documents",
        log=log,
    )
    folder = ShardFolder(out)
    if drop_duplicate_ids(folder, run.markers, config.output.format):
        run.counts = Counter()
        for marker in folder.finished().values():
            run.counts.update({k: v for k, v in marker["counts"].items() if isinstance(v, (int, float))})
    c = run.counts
    docs = c.get("in", 0)
    threshold = next((m["info"]["threshold"] for m in run.markers.values() if "threshold" in m.get("info", {})), section.threshold)
    if threshold is None:  # no document to match: what a worker would have used
        try:
            threshold = calibrated_threshold(identity.model)
        except UserError:
            threshold = None
    per_document = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("matches_per_document:")}
    chosen = {int(k.split(":", 1)[1]): v for k, v in c.items() if k.startswith("complexity:")}
    chosen_total = sum(chosen.values())
    bank_target = target or {int(k): float(v) for k, v in zip(*np.unique(complexity, return_counts=True), strict=False)}
    norm = sum(bank_target.values()) or 1.0
    distinct = set()
    for marker in run.markers.values():
        if marker.get("file") and (out / marker["file"]).exists():
            import pyarrow.parquet as pq

            if marker["file"].endswith(".parquet"):
                distinct.update(pq.read_table(out / marker["file"], columns=["template_id"]).column(0).to_pylist())
            else:
                distinct.update(r.template_id for r in read_rows([out / marker["file"]], MatchRow))
    stats = {
        "read_documents": read_stats(run),
        "match": {
            **outcomes(c),
            "matches": c.get("matches", 0),
            "matched_fraction": round(c.get("out", 0) / docs, 4) if docs else None,
            "matches_per_document": round(c.get("matches", 0) / docs, 3) if docs else None,
            "matches_per_document_histogram": {k: per_document[k] for k in sorted(per_document, key=int)},
            "distinct_templates": len(distinct),
            "vectors": c.get("vectors", 0),
            "vectors_without_match": {
                "no_candidate_above_threshold": c.get("no_candidate", 0),
                "candidates_already_chosen": c.get("all_taken", 0),
                "no_candidate_in_target_complexities": c.get("off_target", 0),
            },
            "threshold": threshold,
            "candidates_per_vector": section.candidates,
            "vectors_per_document": config.embed.num_chunks + 1,
            "embedder": identity.model,
            "index_kind": settings.kind,
            "templates_in_index": meta["templates"],
            "seed": section.seed,
            "text_tokens": c.get("text_tokens", 0),
            "tokens_seen": c.get("tokens_seen", 0),
            "truncated_documents": c.get("truncated_documents", 0),
            "shards": len(run.markers),
            **run.rates("in", "tokens_seen", name="documents"),
        },
        "complexity": {
            "target": {str(k): round(v / norm, 4) for k, v in sorted(bank_target.items())},
            "chosen": {str(k): round(chosen[k] / chosen_total, 4) for k in sorted(chosen)} if chosen_total else {},
            "chosen_counts": {str(k): chosen[k] for k in sorted(chosen)},
        },
    }
    best = {float(k.split(":", 1)[1]): v for k, v in c.items() if k.startswith("best_score:")}
    stats["match"]["best_score_histogram"] = {f"{k:.2f}": best[k] for k in sorted(best)}
    if docs and not c.get("out", 0):
        log(no_match_advice(stats["match"]))
    write_json(stats, out / "stats.json")
    return stats


def no_match_advice(match: dict) -> str:
    """Why a run matched nothing, and what to change (defect: it used to end silently)."""
    return (
        f"match: none of the {match['in']} documents matched any of the {match['templates_in_index']} templates "
        f"at threshold {match['threshold']}; {_best(match)}.\n"
        "  fix: lower the threshold (--threshold or --set match.threshold=...), build a bigger template bank "
        "(more queries), or check that the documents and the queries are about the same topics"
    )


def _best(match: dict) -> str:
    histogram = match.get("best_score_histogram") or {}
    if not histogram:
        return "no template was found near any document"
    top = max(histogram, key=float)
    return f"the best scores seen were {top}–{float(top) + 0.05:.2f} ({histogram[top]} document(s))"
