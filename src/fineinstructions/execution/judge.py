"""Run the judge stage: pairs → judged pairs scoring at least ``judge.min_score``, resumably.

Each input pair file is one shard: its kept pairs go to the shard of the same number,
committed with a completion marker (:mod:`.ledger`), so a crashed run resumes at the
first unfinished file and the request cache (``JUDGED_DIR.cache.sqlite``) answers the
calls that had completed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.ledger import ShardLedger, add_counts, data_files
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.templatize import batched, beside
from fineinstructions.io import read_rows, write_json
from fineinstructions.models.llm import LLM
from fineinstructions.records import PairRow
from fineinstructions.stages.judge import Judge

COUNT_KEYS = ("in", "out", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "seconds", "model_calls", "cache_hits")


def make_judge(config: Config, llm: LLM) -> Judge:
    section = config.judge
    return Judge(llm, format=section.format, prompt=section.prompt, min_score=section.min_score, max_tokens=section.max_tokens)


def run_judge(
    pair_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    llm: LLM | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Judge every pair; returns the stats also written to ``output/stats.json``."""
    section = config.judge
    for path in map(Path, pair_paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    files = data_files(pair_paths)
    fingerprint = {
        "stage": "judge",
        "pairs": [str(Path(p).resolve()) for p in pair_paths],
        "settings": section.model_dump(mode="json"),
    }
    ledger = ShardLedger(output, fingerprint, overwrite=overwrite)
    out = ledger.directory
    owns_llm = llm is None
    if llm is None:
        from fineinstructions.models.factory import make_llm

        llm = make_llm(section.llm, cache_path=beside(out, ".cache.sqlite"))
    judge = make_judge(config, llm)
    log(f"judge: {len(files)} pair file(s); {judge.model}, {judge.format} format, prompt {judge.prompt_version}, keep >= {judge.min_score}")
    progress = Progress("judge", unit="pairs", enabled=show_progress)
    resumed = 0
    for shard, path in enumerate(files):
        if ledger.done(shard) is not None:
            resumed += 1
            continue
        pairs = list(read_rows([path], PairRow))
        hits, misses = getattr(llm, "hits", 0), getattr(llm, "misses", 0)
        tick = time.monotonic()
        kept, rejects = [], []
        skipped, failed, scores = Counter(), Counter(), Counter()
        tokens = Counter()
        for batch in batched(pairs, section.batch_size):
            result = judge(batch)
            kept += result.kept
            rejects += result.rejects
            skipped.update(result.skipped)
            failed.update(result.failed)
            scores.update(result.scores)
            tokens.update(prompt=result.prompt_tokens, cached=result.cached_tokens, completion=result.completion_tokens)
            progress.update(len(batch), tokens=result.completion_tokens, extra=f"{sum(scores.values())} scored")
        counts = {
            "input_file": path.name,
            "in": len(pairs),
            "out": len(kept),
            "skipped": dict(skipped),
            "failed": dict(failed),
            "scores": {str(k): v for k, v in scores.items()},
            "prompt_tokens": tokens["prompt"],
            "cached_prompt_tokens": tokens["cached"],
            "completion_tokens": tokens["completion"],
            "seconds": round(time.monotonic() - tick, 3),
            "model_calls": getattr(llm, "misses", len(pairs)) - misses,
            "cache_hits": getattr(llm, "hits", 0) - hits,
        }
        ledger.commit(shard, kept, PairRow, rejects, counts, format=config.output.format)
        if not show_progress:
            log(f"judge: shard {shard} ({path.name}) done: {len(pairs)} pairs, {len(kept)} kept, {counts['seconds']:.1f}s")
    progress.close()
    if owns_llm:
        llm.close()
    if resumed:
        log(f"judge: resumed; {resumed} finished shard(s) were kept as they were")
    rejects_path = ledger.finish(beside(out, ".rejects.jsonl"))
    markers = ledger.finished()
    totals = add_counts(markers, COUNT_KEYS)
    scores = Counter()
    for marker in markers:
        scores.update({int(k): v for k, v in marker.get("scores", {}).items()})
    seconds = totals["seconds"]
    stats = {
        "judge": {
            "in": totals["in"],
            "out": totals["out"],
            "skipped": totals["skipped"],
            "failed": totals["failed"],
            "score_histogram": {str(k): scores[k] for k in range(1, 6)},
            "min_score": judge.min_score,
            "model": judge.model,
            "format": judge.format,
            "prompt_version": judge.prompt_version,
            "prompt_tokens": totals["prompt_tokens"],
            "cached_prompt_tokens": totals["cached_prompt_tokens"],
            "completion_tokens": totals["completion_tokens"],
            "model_calls": totals["model_calls"],
            "cache_hits": totals["cache_hits"],
            "seconds": round(seconds, 2),
            "pairs_per_s": round(totals["in"] / seconds, 3) if seconds else None,
            "completion_tokens_per_s": round(totals["completion_tokens"] / seconds, 1) if seconds else None,
            "rejects_file": str(rejects_path),
        }
    }
    write_json(stats, out / "stats.json")
    return stats
