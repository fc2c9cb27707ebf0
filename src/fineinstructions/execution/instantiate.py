"""Run the instantiate stage: matches + templates + documents → grounded pairs, resumably.

The matches are read whole (a few rows per document), the templates they name are
looked up in the bank, and the documents stream from their files in order, in batches of
``instantiate.shard_size`` (here or on the executor's workers). The matched documents of
a batch form a shard: its requests go to the model grouped by document (document first
in the prompt, so a document's prefix is computed once) and it is committed with a
completion marker listing its documents (:mod:`.ledger`). Running the command again
after a crash skips those documents, and the request cache (``PAIRS_DIR.cache.sqlite``)
answers the calls that had completed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.executor import (
    Executor,
    Files,
    LLMWorker,
    LocalExecutor,
    Place,
    merge_worker_caches,
    resolved,
    worker_llm,
)
from fineinstructions.execution.ledger import LEDGER_VERSION, ShardLedger, add_counts, data_files
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.templatize import beside
from fineinstructions.io import ReadStats, read_rows, write_json
from fineinstructions.models.factory import make_llm
from fineinstructions.models.llm import LLM
from fineinstructions.records import DocumentRow, MatchRow, PairRow, TemplateRow
from fineinstructions.stages.instantiate import Instantiator

COUNT_KEYS = (
    "in", "out", "documents", "truncated_documents", "markers", "unresolved_markers",
    "ambiguous_markers", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
    "seconds", "model_calls", "cache_hits",
)


def make_instantiator(config: Config, llm: LLM) -> Instantiator:
    section = config.instantiate
    return Instantiator(
        llm,
        mode=section.mode,
        prompt=section.prompt,
        constraint=section.constraint,
        min_excerpt_ratio=section.min_excerpt_ratio,
        max_tokens=section.max_tokens,
        max_excerpts=section.max_excerpts,
        context_window=section.llm.n_ctx,
        seed=section.seed,
    )


def load_matches(matches: Sequence[str | Path]) -> dict[str, list[MatchRow]]:
    by_document: dict[str, list[MatchRow]] = defaultdict(list)
    for row in read_rows(data_files(matches), MatchRow):
        by_document[row.document_id].append(row)
    return by_document


def load_templates(paths: Sequence[str | Path], wanted: set[str]) -> dict[str, TemplateRow]:
    found = {row.id: row for row in read_rows(paths, TemplateRow) if row.id in wanted}
    missing = wanted - set(found)
    if missing:
        raise UserError(
            f"{len(missing)} matched template(s) are not in {', '.join(map(str, paths))}, "
            f"e.g. {sorted(missing)[0]}.\n"
            "  fix: pass with --templates the bank the index (and so the matches) was built from"
        )
    return found


def matched_documents(
    documents: Iterable[DocumentRow], matches: dict[str, list[MatchRow]], templates: dict[str, TemplateRow]
) -> Iterator[tuple[DocumentRow, list[TemplateRow]]]:
    """Each document that has matches, in input order, with its templates (in the order
    the matcher chose them: global vector first)."""
    for document in documents:
        rows = matches.get(document.id)
        if rows:
            ordered = sorted(rows, key=lambda r: r.chunk)
            yield document, [templates[r.template_id] for r in ordered]


@dataclass
class InstantiateTask:
    """Instantiating one batch of documents, as a worker runs it (see :mod:`.executor`)."""

    config: Config
    matches: dict[str, list[MatchRow]]  # pending documents only
    templates: dict[str, TemplateRow]
    cache: Path | None
    llm: LLM | None = None  # a ready backend (tests), used only in this process
    stage: str = "instantiate"

    @property
    def batch_size(self) -> int:
        return self.config.instantiate.shard_size

    def start(self, place: Place) -> Callable[[list[DocumentRow]], dict | None]:
        llm, owns = worker_llm(self.config.instantiate.llm, self.cache, place, self.llm)
        return _InstantiateWorker(
            llm=llm, owns_llm=owns, instantiator=make_instantiator(self.config, llm),
            matches=self.matches, templates=self.templates,
        )


@dataclass
class _InstantiateWorker(LLMWorker):
    instantiator: Instantiator
    matches: dict[str, list[MatchRow]]
    templates: dict[str, TemplateRow]

    def __call__(self, documents: list[DocumentRow]) -> dict | None:
        batch = list(matched_documents(documents, self.matches, self.templates))
        if not batch:
            return None
        llm = self.llm
        hits, misses = getattr(llm, "hits", 0), getattr(llm, "misses", 0)
        tick = time.monotonic()
        result = self.instantiator(batch)
        seconds = time.monotonic() - tick
        counts = {
            "in": result.requests,
            "out": len(result.pairs),
            "skipped": dict(result.skipped),
            "failed": dict(result.failed),
            "documents": result.documents,
            "truncated_documents": result.truncated_documents,
            "markers": result.markers,
            "unresolved_markers": result.unresolved_markers,
            "ambiguous_markers": result.ambiguous_markers,
            "prompt_tokens": result.prompt_tokens,
            "cached_prompt_tokens": result.cached_tokens,
            "completion_tokens": result.completion_tokens,
            "seconds": round(seconds, 3),
            "model_calls": getattr(llm, "misses", result.requests) - misses,
            "cache_hits": getattr(llm, "hits", 0) - hits,
            "inputs": [document.id for document, _ in batch],
        }
        return {"rows": result.pairs, "rejects": result.rejects, "counts": counts}


def run_instantiate(
    match_paths: Sequence[str | Path],
    template_paths: Sequence[str | Path],
    document_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    llm: LLM | None = None,
    executor: Executor | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Instantiate every match; returns the stats also written to ``output/stats.json``.

    Resumes an unfinished run into the same folder; ``llm`` replaces the configured
    backend (tests pass a scripted one); ``executor`` runs the batches (default: here).
    """
    section = config.instantiate
    executor = executor or LocalExecutor()
    fingerprint = {
        "stage": "instantiate",
        "ledger": LEDGER_VERSION,
        "matches": [str(Path(p).resolve()) for p in match_paths],
        "templates": [str(Path(p).resolve()) for p in template_paths],
        "documents": [resolved(p) for p in document_paths],
        "settings": section.model_dump(mode="json"),
    }
    ledger = ShardLedger(output, fingerprint, overwrite=overwrite)
    out = ledger.directory
    done, next_shard = ledger.start()
    matches = load_matches(match_paths)
    templates = load_templates(template_paths, {r.template_id for rows in matches.values() for r in rows})
    pending = {document: rows for document, rows in matches.items() if document not in done}
    cache = beside(out, ".cache.sqlite") if section.llm.cache else None
    merge_worker_caches(cache)
    task = InstantiateTask(config, pending, templates, cache, llm)
    # Names the model and the constraint; the backend loads nothing until it is used.
    described = make_instantiator(config, llm if llm is not None else make_llm(section.llm))
    total_requests = sum(len(rows) for rows in pending.values())
    log(
        f"instantiate: {len(matches)} documents, {sum(len(r) for r in matches.values())} matches; "
        f"{described.model}, {described.mode} mode, prompt {described.prompt_version}, "
        f"constraint {described.constraint}, executor {executor.kind}"
        + (f"; resuming: {len(matches) - len(pending)} documents were done" if done else "")
    )
    read_stats = ReadStats()
    source = Files(tuple(map(str, document_paths)), "documents", fields=config.input.field_mapping(), on_error=config.input.on_error)
    progress = Progress("instantiate", total=total_requests, unit="pairs", enabled=show_progress)
    shard = next_shard
    for result in executor.map(source, task, read_stats):
        counts = result["counts"]
        ledger.commit(shard, result["rows"], PairRow, result["rejects"], counts, format=config.output.format)
        progress.update(counts["in"], tokens=counts["completion_tokens"], extra=f"{counts['out']} kept in the last shard")
        if not show_progress:
            log(
                f"instantiate: shard {shard} done: {counts['in']} matches of {counts['documents']} documents, "
                f"{counts['out']} grounded, {counts['seconds']:.1f}s ({progress.done}/{total_requests} matches)"
            )
        shard += 1
    progress.close()
    merge_worker_caches(cache)
    rejects_path = ledger.finish(beside(out, ".rejects.jsonl"))
    totals = add_counts(ledger.finished(), COUNT_KEYS)
    stats = {"read_documents": read_stats.as_dict(), "instantiate": _summary(totals, described, rejects_path)}
    write_json(stats, out / "stats.json")
    return stats


def _summary(totals: dict, instantiator: Instantiator, rejects_path: Path) -> dict:
    seconds = totals["seconds"]
    markers = totals["markers"]
    return {
        "in": totals["in"],
        "out": totals["out"],
        "skipped": totals["skipped"],
        "failed": totals["failed"],
        "documents": totals["documents"],
        "truncated_documents": totals["truncated_documents"],
        "model": instantiator.model,
        "mode": instantiator.mode,
        "prompt_version": instantiator.prompt_version,
        "constraint": instantiator.constraint,
        "min_excerpt_ratio": instantiator.min_excerpt_ratio,
        "markers": markers,
        "unresolved_markers": totals["unresolved_markers"],
        "ambiguous_markers": totals["ambiguous_markers"],
        "unresolved_marker_rate": round(totals["unresolved_markers"] / markers, 4) if markers else None,
        "prompt_tokens": totals["prompt_tokens"],
        "cached_prompt_tokens": totals["cached_prompt_tokens"],
        "cached_prompt_fraction": round(totals["cached_prompt_tokens"] / totals["prompt_tokens"], 4)
        if totals["prompt_tokens"]
        else None,
        "completion_tokens": totals["completion_tokens"],
        "model_calls": totals["model_calls"],
        "cache_hits": totals["cache_hits"],
        "seconds": round(seconds, 2),
        "pairs_per_s": round(totals["in"] / seconds, 3) if seconds else None,
        "completion_tokens_per_s": round(totals["completion_tokens"] / seconds, 1) if seconds else None,
        "tokens_per_s": round((totals["prompt_tokens"] - totals["cached_prompt_tokens"] + totals["completion_tokens"]) / seconds, 1)
        if seconds
        else None,
        "rejects_file": str(rejects_path),
    }
