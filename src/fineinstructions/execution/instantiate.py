"""``instantiate``: matches + documents → grounded pairs, one output shard per match shard.

Shard *i* of the pairs is made by one worker from match shard *i* and the document piece
it was matched from (named in its marker), so no process holds every match, template or
document. Matches not written by ``match`` (no markers) are joined with the documents
piece by piece instead. Resume: see :mod:`.runner`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.corpus import without_later_duplicates
from fineinstructions.execution.ledger import data_files, upstream_markers
from fineinstructions.execution.runner import (
    StageRun,
    beside,
    document_read,
    read_stats,
    resolved,
    run_stage,
    stage_prompt,
)
from fineinstructions.execution.shards import InputShard, ReadSpec, from_upstream, plan_corpus
from fineinstructions.io import write_json
from fineinstructions.io.readers import input_files
from fineinstructions.records import MatchRow
from fineinstructions.stages.base import outcomes
from fineinstructions.stages.llm_stages import InstantiateStage


def joined_plan(
    upstream: Sequence[str | Path],
    document_paths: Sequence[str | Path],
    row_type: type,
    shard_size: int,
    *,
    work: Path,
    read: ReadSpec,
    executor: Any = None,
    bank: Sequence[str | Path] = (),
    log: Callable[[str], None] = print,
) -> Callable[[], list[InputShard]]:
    """Shards that each read a document piece with the rows ``upstream`` made from it
    (and, for match rows without their template's text, the ``bank`` to complete them)."""
    bank_files = tuple(str(f) for f in data_files(bank)) if bank else ()

    def plan() -> list[InputShard]:
        if len(upstream) == 1 and (markers := upstream_markers(upstream[0])) is not None:
            shards = [dataclasses.replace(s, bank=bank_files) for s in from_upstream(upstream[0], markers, "joined", row_type)]
            known = {resolved(p) for p in input_files(document_paths)}
            for shard in shards:
                if shard.piece is not None and resolved(shard.piece.path) not in known:
                    raise UserError(
                        f"{upstream[0]} was made from {shard.piece.path}, which is not among the documents given "
                        f"({', '.join(map(str, document_paths))}).\n  fix: pass with --documents the documents it was made from"
                    )
            return shards
        # Rows not written by this package's stages: every shard reads them all, keeps
        # those of its own documents; a pre-pass finds documents an earlier piece had.
        files = tuple(str(f) for f in data_files(upstream))
        pieces = without_later_duplicates(plan_corpus(document_paths, "documents", shard_size), work, read, executor, log)
        return [
            InputShard(s.index, "joined", piece=s.piece, files=files, row_type=row_type.__name__, rows=s.rows,
                       skip_hashes=s.skip_hashes, bank=bank_files)
            for s in pieces
        ]

    return plan


def run_instantiate(
    match_paths: Sequence[str | Path],
    template_paths: Sequence[str | Path],
    document_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    llm: Any = None,
    executor: Any = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Instantiate every match; returns the stats also written to ``output/stats.json``.

    ``template_paths`` (the bank) is read only for matches that carry no template text.
    Resumes an unfinished run into the same folder; ``llm`` replaces the configured
    backend (tests pass a scripted one); ``executor`` runs the shards (default: here).
    """
    for path in map(Path, match_paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    section = config.instantiate
    stage = InstantiateStage(config, llm=llm, prompt=stage_prompt(config.instantiate))
    described = stage.describe()
    executor_kind = getattr(executor, "kind", "local")
    log(
        f"instantiate: {described.model}, {described.mode} mode, prompt {described.prompt_version}, "
        f"constraint {described.constraint}" + _fit(described) + f", executor {executor_kind}"
    )
    out = Path(output)
    cache = beside(out, ".cache.sqlite") if section.llm.cache else None
    read = document_read(config)
    run = run_stage(
        stage,
        joined_plan(match_paths, document_paths, MatchRow, section.shard_size, work=out / ".work" / "ids",
                    read=read, executor=executor, bank=template_paths, log=log),
        out,
        inputs={"matches": [resolved(p) for p in match_paths], "documents": [resolved(p) for p in document_paths]},
        read=read,
        format=config.output.format,
        cache=cache,
        overwrite=overwrite,
        executor=executor,
        show_progress=show_progress,
        unit="documents",
        log=log,
    )
    stats = {"read_documents": read_stats(run), "instantiate": summary(run, described)}
    write_json(stats, out / "stats.json")
    return stats


def _fit(described: Any) -> str:
    method = getattr(described, "fit_method", None)
    return f", long documents cut by {method}" if method else ""


def token_rates(run: StageRun, rows: str) -> dict:
    """Tokens and calls, and the throughput of the job (over this run's wall time) kept
    apart from each worker's (over the seconds workers spent in shards, summed)."""
    c = run.counts
    fresh = c.get("prompt_tokens", 0) - c.get("cached_prompt_tokens", 0) + c.get("completion_tokens", 0)
    busy, wall = c.get("seconds", 0), (run.wall_seconds if not run.resumed else 0)

    def per(amount: float, seconds: float) -> float | None:
        return round(amount / seconds, 1) if seconds else None

    return {
        "prompt_tokens": c.get("prompt_tokens", 0),
        "cached_prompt_tokens": c.get("cached_prompt_tokens", 0),
        "cached_prompt_fraction": round(c["cached_prompt_tokens"] / c["prompt_tokens"], 4) if c.get("prompt_tokens") else None,
        "completion_tokens": c.get("completion_tokens", 0),
        "model_calls": c.get("model_calls", 0),
        "cache_hits": c.get("cache_hits", 0),
        **run.rates(rows, name="pairs"),
        "completion_tokens_per_s": per(c.get("completion_tokens", 0), wall),
        "completion_tokens_per_s_per_worker": per(c.get("completion_tokens", 0), busy),
        "tokens_per_s": per(fresh, wall),
        "tokens_per_s_per_worker": per(fresh, busy),
        "rejects_file": str(run.rejects_file),
    }


def summary(run: StageRun, described: Any) -> dict:
    c = run.counts
    markers = c.get("markers", 0)
    return {
        **outcomes(c),
        "documents": c.get("documents", 0),
        "truncated_documents": c.get("truncated_documents", 0),
        "model": described.model,
        "mode": described.mode,
        "prompt_version": described.prompt_version,
        "constraint": described.constraint,
        "min_excerpt_ratio": described.min_excerpt_ratio,
        "markers": markers,
        "unresolved_markers": c.get("unresolved_markers", 0),
        "ambiguous_markers": c.get("ambiguous_markers", 0),
        "unresolved_marker_rate": round(c.get("unresolved_markers", 0) / markers, 4) if markers else None,
        "shards": len(run.markers),
        **token_rates(run, "in"),
    }
