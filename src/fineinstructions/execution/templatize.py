"""Run the templatize stage over query files: filter, templatize, write the bank.

Queries stream from the input files in batches: each batch is filtered (duplicates,
protected evaluation prompts, harmful content), templatized and validated, and its valid
templates are appended to the bank (sharded Parquet or JSONL). Beside the output folder,
never inside it:

- ``TEMPLATES_DIR.rejects.jsonl``: every dropped query and rejected model answer, with
  the reason and the model's raw output;
- ``TEMPLATES_DIR.cache.sqlite``: the request cache, so running the command again (after
  a crash, or with ``--overwrite``) makes no model call that already completed.

The bank's ``stats.json`` holds the counts of every step (``in = out + skipped + failed``),
the complexity histogram and the throughput.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from fineinstructions.config import Config
from fineinstructions.execution.executor import (
    Files,
    Items,
    LLMWorker,
    LocalExecutor,
    merge_worker_caches,
    worker_llm,
)
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.rejects import RejectsFile
from fineinstructions.io import ReadStats, ShardWriter, write_json
from fineinstructions.io.writers import prepare_output_dir
from fineinstructions.models.llm import LLM
from fineinstructions.records import QueryRow, RejectRow, TemplateRow
from fineinstructions.stages.dedup import normalize_query
from fineinstructions.stages.query_filter import QueryFilter
from fineinstructions.stages.templatize import STAGE, Templatizer

T = TypeVar("T")


def beside(output: str | Path, suffix: str) -> Path:
    """``templates/`` + ``.rejects.jsonl`` → ``templates.rejects.jsonl`` next to it."""
    output = Path(output)
    return output.with_name(output.name.rstrip("/") + suffix)


def batched(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def make_templatizer(config: Config, llm: LLM) -> Templatizer:
    section = config.templatize
    return Templatizer(
        llm,
        mode=section.mode,
        prompt=section.prompt,
        constraint=section.constraint,
        max_tokens=section.max_tokens,
    )


@dataclass
class TemplatizeTask:
    """Templatizing one batch of queries, as a worker runs it (see :mod:`.executor`)."""

    config: Config
    cache: Path | None
    llm: LLM | None = None  # a ready backend (tests), used only in this process
    stage: str = "templatize"

    @property
    def batch_size(self) -> int:
        return self.config.templatize.batch_size

    def start(self, place) -> Callable[[list[QueryRow]], dict]:
        llm, owns = worker_llm(self.config.templatize.llm, self.cache, place, self.llm)
        return _TemplatizeWorker(llm=llm, owns_llm=owns, templatizer=make_templatizer(self.config, llm))


@dataclass
class _TemplatizeWorker(LLMWorker):
    templatizer: Templatizer

    def __call__(self, queries: list[QueryRow]) -> dict:
        tick = time.monotonic()
        result = self.templatizer(queries)
        return {"result": result, "queries": len(queries), "seconds": time.monotonic() - tick}


def run_templatize(
    query_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    limit: int | None = None,
    llm: LLM | None = None,
    executor=None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Templatize the queries in ``query_paths`` into the bank at ``output``.

    ``llm`` replaces the configured backend (tests pass a scripted one). Returns the
    stats also written to ``output/stats.json``.
    """
    out = prepare_output_dir(output, overwrite=overwrite)
    rejects_path = beside(out, ".rejects.jsonl")
    executor = executor or LocalExecutor()
    cache = beside(out, ".cache.sqlite") if config.templatize.llm.cache else None
    merge_worker_caches(cache)
    read_stats = ReadStats()
    queries: Iterable[QueryRow] = executor.rows(
        Files(tuple(map(str, query_paths)), "queries", fields=config.input.field_mapping(), on_error=config.input.on_error),
        read_stats,
    )
    if limit is not None:
        queries = itertools.islice(queries, limit)
    query_filter = QueryFilter.from_config(config.queries)
    if llm is None:
        from fineinstructions.models.factory import make_llm

        templatizer = make_templatizer(config, make_llm(config.templatize.llm))  # names it; loads nothing
    else:
        templatizer = make_templatizer(config, llm)
    log(
        f"templatize: {templatizer.model}, {templatizer.mode} mode, prompt "
        f"{templatizer.prompt_version}, constraint {templatizer.constraint}, executor {executor.kind}"
    )

    progress = Progress("templatize", unit="queries", enabled=show_progress)
    histogram: Counter = Counter()  # complexity -> templates in the bank
    seen: dict[str, str] = {}  # normalised template text -> id of the first
    failed: Counter = Counter()
    skipped: Counter = Counter()
    tokens = Counter()
    templatize_in = 0
    model_seconds = 0.0
    with (
        ShardWriter(
            out, TemplateRow, format=config.output.format, rows_per_shard=config.output.rows_per_shard
        ) as writer,
        RejectsFile(rejects_path) as rejects,
    ):
        def kept() -> Iterator[QueryRow]:
            # The filters keep state (the queries seen so far), so they run here, in order.
            for batch in batched(queries, config.templatize.batch_size):
                passed, dropped = query_filter.filter(batch)
                rejects.write(_dropped_query(query, reason) for query, reason in dropped)
                yield from passed

        # Here the queries stream through; a cluster is given them all at once.
        source = Items(kept() if executor.kind == "local" else list(kept()))
        for item in executor.map(source, TemplatizeTask(config, cache, llm)):
            result = item["result"]
            model_seconds += item["seconds"]
            templatize_in += item["queries"]
            failed.update(result.failed)
            tokens.update(
                prompt=result.prompt_tokens,
                completion=result.completion_tokens,
                cached=result.cached_tokens,
            )
            new = []
            for template in result.templates:
                key = normalize_query(template.template)
                if key in seen:
                    skipped["duplicate_template"] += 1
                    rejects.write([_duplicate(template, seen[key], templatizer)])
                    continue
                seen[key] = template.id
                new.append(template)
            writer.write(new)
            histogram.update(t.complexity for t in new)
            rejects.write(result.rejects)
            progress.update(
                item["queries"],
                tokens=result.completion_tokens,
                extra=f"{sum(histogram.values())} templates, {sum(failed.values())} rejected",
            )
    progress.close()
    merge_worker_caches(cache)

    filter_stats = query_filter.stats
    out_count = sum(histogram.values())
    stats = {
        "read_queries": read_stats.as_dict(),
        "filter_queries": filter_stats,
        "templatize": {
            "in": templatize_in,
            "out": out_count,
            "skipped": dict(skipped),
            "failed": dict(sorted(failed.items(), key=lambda kv: -kv[1])),
            # Valid: passed every check (a duplicate of an earlier template is valid too).
            "valid": out_count + skipped["duplicate_template"],
            "valid_rate": round((out_count + skipped["duplicate_template"]) / templatize_in, 4)
            if templatize_in
            else None,
            "model": templatizer.model,
            "mode": templatizer.mode,
            "prompt_version": templatizer.prompt_version,
            "constraint": templatizer.constraint,
            "seconds": round(model_seconds, 2),
            "queries_per_s": round(templatize_in / model_seconds, 3) if model_seconds else None,
            "prompt_tokens": tokens["prompt"],
            "cached_prompt_tokens": tokens["cached"],
            "completion_tokens": tokens["completion"],
            "completion_tokens_per_s": round(tokens["completion"] / model_seconds, 1)
            if model_seconds
            else None,
        },
        "complexity_histogram": {str(k): histogram[k] for k in sorted(histogram)},
        "rejects_file": str(rejects_path),
    }
    write_json(stats, out / "stats.json")
    return stats


def _dropped_query(query: QueryRow, reason: str) -> RejectRow:
    kind, _, detail = reason.partition(":")
    explain = {
        "exact_duplicate": "the same query (ignoring case and spacing) came earlier",
        "near_duplicate": "a near-identical query (MinHash) came earlier",
        "contaminated": f"shares a long n-gram with protected set {detail!r}",
        "harmful": f"flagged as {detail!r} by the harmful-content filter",
    }
    return RejectRow(
        stage="filter_queries",
        input_id=query.id,
        reason=reason,
        detail=explain.get(kind, reason),
        input=query.text,
    )


def _duplicate(template: TemplateRow, first_id: str, templatizer: Templatizer) -> RejectRow:
    return RejectRow(
        stage=STAGE,
        input_id=template.query_id,
        reason="duplicate_template",
        detail=f"the same template as {first_id}, made from an earlier query",
        input=template.template,
        raw_output=template.compatible_document_description,
        model=templatizer.model,
        prompt_version=templatizer.prompt_version,
    )
