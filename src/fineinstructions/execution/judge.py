"""Run the judge stage: pairs → judged pairs scoring at least ``judge.min_score``, resumably.

Pairs are judged in batches of ``judge.batch_size`` (here or on the executor's workers);
each batch's kept pairs and rejects are committed as one shard with a completion marker
listing the pairs it judged (:mod:`.ledger`). A crashed run resumes by skipping those
pairs, and the request cache (``JUDGED_DIR.cache.sqlite``) answers the calls that had
completed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.executor import (
    Executor,
    Files,
    LLMWorker,
    LocalExecutor,
    Place,
    merge_worker_caches,
    worker_llm,
)
from fineinstructions.execution.ledger import LEDGER_VERSION, ShardLedger, add_counts, data_files
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.templatize import beside
from fineinstructions.io import ReadStats, write_json
from fineinstructions.models.factory import make_llm
from fineinstructions.models.llm import LLM
from fineinstructions.records import PairRow
from fineinstructions.stages.judge import Judge

COUNT_KEYS = ("in", "out", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "seconds", "model_calls", "cache_hits")


def make_judge(config: Config, llm: LLM) -> Judge:
    section = config.judge
    return Judge(llm, format=section.format, prompt=section.prompt, min_score=section.min_score, max_tokens=section.max_tokens)


@dataclass
class JudgeTask:
    """Judging one batch of pairs, as a worker runs it (see :mod:`.executor`)."""

    config: Config
    done: frozenset[str]  # pairs judged by finished shards
    cache: Path | None
    llm: LLM | None = None  # a ready backend (tests), used only in this process
    stage: str = "judge"

    @property
    def batch_size(self) -> int:
        return self.config.judge.batch_size

    def start(self, place: Place) -> Callable[[list[PairRow]], dict | None]:
        llm, owns = worker_llm(self.config.judge.llm, self.cache, place, self.llm)
        return _JudgeWorker(llm=llm, owns_llm=owns, judge=make_judge(self.config, llm), done=self.done)


@dataclass
class _JudgeWorker(LLMWorker):
    judge: Judge
    done: frozenset[str]

    def __call__(self, pairs: list[PairRow]) -> dict | None:
        pairs = [pair for pair in pairs if pair.id not in self.done]
        if not pairs:
            return None
        llm = self.llm
        hits, misses = getattr(llm, "hits", 0), getattr(llm, "misses", 0)
        tick = time.monotonic()
        result = self.judge(pairs)
        counts = {
            "in": len(pairs),
            "out": len(result.kept),
            "skipped": dict(result.skipped),
            "failed": dict(result.failed),
            "scores": {str(k): v for k, v in result.scores.items()},
            "prompt_tokens": result.prompt_tokens,
            "cached_prompt_tokens": result.cached_tokens,
            "completion_tokens": result.completion_tokens,
            "seconds": round(time.monotonic() - tick, 3),
            "model_calls": getattr(llm, "misses", len(pairs)) - misses,
            "cache_hits": getattr(llm, "hits", 0) - hits,
            "inputs": [pair.id for pair in pairs],
        }
        return {"rows": result.kept, "rejects": result.rejects, "counts": counts}


def run_judge(
    pair_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    llm: LLM | None = None,
    executor: Executor | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Judge every pair; returns the stats also written to ``output/stats.json``."""
    section = config.judge
    executor = executor or LocalExecutor()
    for path in map(Path, pair_paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    files = data_files(pair_paths)
    fingerprint = {
        "stage": "judge",
        "ledger": LEDGER_VERSION,
        "pairs": [str(Path(p).resolve()) for p in pair_paths],
        "settings": section.model_dump(mode="json"),
    }
    ledger = ShardLedger(output, fingerprint, overwrite=overwrite)
    out = ledger.directory
    done, next_shard = ledger.start()
    cache = beside(out, ".cache.sqlite") if section.llm.cache else None
    merge_worker_caches(cache)
    judge = make_judge(config, llm if llm is not None else make_llm(section.llm))  # names it; loads nothing
    log(
        f"judge: {len(files)} pair file(s); {judge.model}, {judge.format} format, prompt {judge.prompt_version}, "
        f"keep >= {judge.min_score}, executor {executor.kind}" + (f"; resuming: {len(done)} pairs were judged" if done else "")
    )
    progress = Progress("judge", unit="pairs", enabled=show_progress)
    shard = next_shard
    if files:
        source = Files(tuple(str(f) for f in files), "rows", row_type=PairRow)
        for result in executor.map(source, JudgeTask(config, frozenset(done), cache, llm), ReadStats()):
            counts = result["counts"]
            ledger.commit(shard, result["rows"], PairRow, result["rejects"], counts, format=config.output.format)
            progress.update(counts["in"], tokens=counts["completion_tokens"], extra=f"{progress.done} judged")
            if not show_progress:
                log(f"judge: shard {shard} done: {counts['in']} pairs, {counts['out']} kept, {counts['seconds']:.1f}s")
            shard += 1
    progress.close()
    merge_worker_caches(cache)
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
