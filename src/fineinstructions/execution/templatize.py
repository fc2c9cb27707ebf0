"""``templatize``: query files → the template bank, resumably.

Three steps: the query filters (a reduce, in input order: exact and near duplicates,
protected evaluation prompts, harmful content) write the kept queries as shards under
``TEMPLATES_DIR/.work/queries``; the templatize stage runs over those shards on the
executor's workers (``.work/templatized``, resumable shard by shard); and a last reduce
keeps the first of equal templates, in shard order, in the bank. Beside the output
folder, never inside it:

- ``TEMPLATES_DIR.rejects.jsonl``: every dropped query and rejected model answer, with
  the reason and the model's raw output;
- ``TEMPLATES_DIR.cache.sqlite``: the request cache, so running the command again (after
  a crash, or with ``--overwrite``) makes no model call that already completed.

The bank's ``stats.json`` holds the counts of every step (``in = out + skipped + failed``),
the complexity histogram and the throughput.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from fineinstructions.config import Config, QueriesConfig
from fineinstructions.errors import UserError
from fineinstructions.execution.executor import batched
from fineinstructions.execution.instantiate import token_rates
from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.outputs import (
    TEMPLATIZE_FOLDER,
    changed_inputs,
    clear,
    folder_lock,
    input_state,
    refuse_changed_inputs,
    refuse_inputs_inside,
)
from fineinstructions.execution.rejects import RejectsFile
from fineinstructions.execution.runner import beside, resolved, run_stage, stage_prompt
from fineinstructions.execution.shards import InputShard
from fineinstructions.io import ReadStats, ShardWriter, read_queries, read_rows, write_json
from fineinstructions.io.formats import format_suffix
from fineinstructions.io.writers import write_table
from fineinstructions.models.llm import LLM
from fineinstructions.records import QueryRow, RejectRow, TemplateRow, to_table
from fineinstructions.stages.base import outcomes
from fineinstructions.stages.decontaminate import load_protected
from fineinstructions.stages.dedup import normalize_query
from fineinstructions.stages.llm_stages import TemplatizeStage
from fineinstructions.stages.moderation import make_harm_checker
from fineinstructions.stages.query_filter import FilterQueriesStage
from fineinstructions.stages.templatize import STAGE, Templatizer

T = TypeVar("T")


def _fields(config: Config):
    return config.input.query_fields()


def query_filter_stage(config: QueriesConfig) -> FilterQueriesStage:
    """The filters, with what they need built here: the protected sets read from their
    files, the harm checker (the offline lexicon or an endpoint client)."""
    decontaminator = (
        load_protected(config.protected, text_field=config.protected_text_field, n=config.decontamination_ngram)
        if config.protected
        else None
    )
    return FilterQueriesStage(config, checker=make_harm_checker(config), decontaminator=decontaminator)


def filter_queries(
    query_paths: Sequence[str | Path], work: Path, config: Config, *, limit: int | None, shard_size: int, log: Callable[[str], None]
) -> dict:
    """The first reduce step: read every query in order, drop exact and near duplicates,
    protected (evaluation) prompts and harmful ones, and write the kept queries as shards
    of ``shard_size``. It holds the filters' state: about 100 bytes a kept query for
    exact dedup, plus the MinHash index for near dedup (see :mod:`..stages.dedup`).
    Finished when ``done.json`` exists; otherwise it is redone whole (it is cheap next to
    templatizing)."""
    done_file = work / "done.json"
    if done_file.exists():
        return json.loads(done_file.read_text(encoding="utf-8"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    read = ReadStats()
    queries: Iterable[QueryRow] = read_queries(query_paths, fields=_fields(config), stats=read, on_error=config.input.on_error)
    if limit is not None:
        queries = itertools.islice(queries, limit)
    stage = query_filter_stage(config.queries)
    shards = 0
    with RejectsFile(work / "rejects.jsonl") as rejects:
        for batch in batched(queries, shard_size):
            result = stage.process(batch)
            rejects.write(result.rejects)
            if result.rows:
                write_table(to_table(result.rows, QueryRow), work / f"part-{shards:05d}.parquet")
                shards += 1
        for error in read.errors:
            rejects.write([RejectRow(stage="read", input_id=str(error.path), reason="invalid_row", detail=str(error), input="")])
    query_filter = stage.filter
    result = {"read_queries": read.as_dict(), "filter_queries": query_filter.stats, "shards": shards}
    write_json(result, done_file)
    return result


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

    Three steps: filter the queries (a reduce, in order), templatize their shards (on the
    executor's workers), and remove templates that repeat an earlier one (a reduce, in
    shard order). Resumes an unfinished run into the same folder. ``llm`` replaces the
    configured backend (tests pass a scripted one). Returns the stats also written to
    ``output/stats.json``.
    """
    out = Path(output)
    work = out / ".work"
    folder = ShardFolder(out)
    section = config.templatize
    stage = TemplatizeStage(config, llm=llm, prompt=stage_prompt(config.templatize))
    stage.check()  # first: a backend that cannot run here writes (or clears) nothing
    refuse_inputs_inside(out, query_paths)
    with folder_lock(out, "templatize"):  # one process per output folder
        if overwrite:
            clear(out, TEMPLATIZE_FOLDER, log=log)
        recorded = work / "input_files.json"
        changed = changed_inputs(json.loads(recorded.read_text(encoding="utf-8"))) if recorded.exists() else []
        if changed:
            # Templates made from the old queries are refused; when none was finished yet,
            # the filters and the plan are made again from the new queries.
            if (out / "stats.json").exists() or ShardFolder(work / "templatized").finished():
                refuse_changed_inputs(changed, out)
            shutil.rmtree(work)
        if (out / "stats.json").exists() and (work / "templatized").exists():
            stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
            if stats.get("inputs") == _inputs(query_paths, limit, config):
                log("templatize: finished in an earlier run; kept")
                return stats
        elif out.exists() and any(p.is_file() and format_suffix(p) for p in out.iterdir()) and not work.exists():
            raise UserError(
                f"{out} holds data files that this command did not write (they would be read back as its "
                "output); --overwrite deletes only what fineinstructions wrote.\n"
                "  fix: choose another output folder, or move those files out of it"
            )
        templatizer = stage.describe()
        log(
            f"templatize: {templatizer.model}, {templatizer.mode} mode, prompt "
            f"{templatizer.prompt_version}, constraint {templatizer.constraint}, executor {getattr(executor, 'kind', 'local')}"
        )
        inputs = _inputs(query_paths, limit, config)
        previous = work / "inputs.json"
        if previous.exists() and json.loads(previous.read_text(encoding="utf-8")) != json.loads(json.dumps(inputs)):
            raise UserError(
                f"{out} holds templates of other queries or query filters.\n"
                "  fix: choose another output folder, or pass --overwrite to start again"
            )
        work.mkdir(parents=True, exist_ok=True)
        write_json(inputs, previous)
        if not recorded.exists():
            write_json(input_state(query_paths), recorded)
        filtered = filter_queries(query_paths, work / "queries", config, limit=limit, shard_size=section.shard_size, log=log)
        files = sorted((work / "queries").glob("part-*.parquet"))
        run = run_stage(
            stage,
            lambda: [InputShard(i, "rows", files=(str(f),), row_type="QueryRow") for i, f in enumerate(files)],
            work / "templatized",
            inputs=inputs,
            format="parquet",
            cache=beside(out, ".cache.sqlite") if section.llm.cache else None,
            executor=executor,
            show_progress=show_progress,
            unit="queries",
            log=log,
        )
        histogram, duplicates = dedup_templates(run, out, config, templatizer)
        c = run.counts
        rejects_path = folder.join_rejects(
            beside(out, ".rejects.jsonl"), [work / "queries" / "rejects.jsonl", run.rejects_file, duplicates]
        )
        out_count = sum(histogram.values())
        templatize_in = c.get("in", 0)
        valid = c.get("out", 0)
        stats = {
            "inputs": inputs,
            "read_queries": filtered["read_queries"],
            "filter_queries": filtered["filter_queries"],
            "templatize": {
                "in": templatize_in,
                "out": out_count,
                "skipped": {"duplicate_template": valid - out_count} if valid - out_count else {},
                "failed": outcomes(c)["failed"],
                # Valid: passed every check (a duplicate of an earlier template is valid too).
                "valid": valid,
                "valid_rate": round(valid / templatize_in, 4) if templatize_in else None,
                "model": templatizer.model,
                "mode": templatizer.mode,
                "prompt_version": templatizer.prompt_version,
                "constraint": templatizer.constraint,
                "shards": len(run.markers),
                **{k: v for k, v in token_rates(run, "in").items() if not k.startswith("pairs_per_s")},
                **run.rates("in", name="queries"),
            },
            "complexity_histogram": {str(k): histogram[k] for k in sorted(histogram)},
            "rejects_file": str(rejects_path),
        }
        write_json(stats, out / "stats.json")
        return stats


def _inputs(query_paths: Sequence[str | Path], limit: int | None, config: Config) -> dict:
    return {
        "queries": [resolved(p) for p in query_paths],
        "limit": limit,
        "filters": config.queries.model_dump(mode="json"),
        "fields": str(_fields(config)),
    }


def dedup_templates(run, out: Path, config: Config, templatizer) -> tuple[Counter, Path]:
    """The last reduce step: keep the first of equal templates (after normalising case
    and spacing), in shard order, and write the bank. Holds one normalised text and id
    per distinct template (about 150 bytes each)."""
    for path in out.glob("part-*"):
        path.unlink()
    seen: dict[str, str] = {}
    histogram: Counter = Counter()
    duplicates = out / ".work" / "duplicates.jsonl"
    files = [Path(run.markers[i]["file"]) for i in sorted(run.markers) if run.markers[i].get("file")]
    with (
        ShardWriter(out, TemplateRow, format=config.output.format, rows_per_shard=config.output.rows_per_shard) as writer,
        RejectsFile(duplicates) as rejects,
    ):
        for name in files:
            kept = []
            for template in read_rows([out / ".work" / "templatized" / name], TemplateRow):
                key = normalize_query(template.template)
                if key in seen:
                    rejects.write([_duplicate(template, seen[key], templatizer)])
                    continue
                seen[key] = template.id
                kept.append(template)
                histogram[template.complexity] += 1
            writer.write(kept)
    return histogram, duplicates


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
