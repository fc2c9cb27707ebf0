"""Build the template index from any template bank, streaming and resumably.

Two steps. First the embed stage runs on the executor's workers: each reads one shard of
about ``index.shard_size`` rows of the bank (a byte range of a JSONL file, row groups of
a Parquet file, a whole CSV), parses and checks every template
(:mod:`fineinstructions.text.bank`), drops repeats within the shard, embeds the
descriptions and commits a vector shard; a killed build resumes from the shards it had
committed. Then the driver reduces: it drops templates an earlier shard already had
(by 64-bit hashes of their content and ids, 16 bytes a template), trains IVF quantisers
on a sample of about ``index.train_size`` templates chosen by a hash of their id (uniform
over the bank, whatever its order), and adds every vector shard by shard, writing each
shard's template ids and details straight to the index folder. So memory holds one shard
of vectors, the hashes, and the index itself (see :mod:`fineinstructions.models.index`
for what each kind costs a template), never the bank.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.outputs import (
    INDEX_FOLDER,
    clear,
    folder_lock,
    refuse_inputs_inside,
)
from fineinstructions.io import write_json
from fineinstructions.io.formats import format_suffix, is_url
from fineinstructions.models.embedder import Embedder
from fineinstructions.models.index import IndexBuilder, settings_for
from fineinstructions.text.bank import DUPLICATE, DUPLICATE_ID, REPEATED

KEEP, REPEATED_CONTENT, REPEATED_ID = 0, 1, 2


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") / 2**64


def _built_from(out: Path) -> set[int]:
    """The vector shards the index in ``out`` was built from."""
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    return set(meta.get("vector_shards", ()))


def _vector_tables(run) -> list[Path]:
    return [Path(run.markers[i]["file"]) for i in sorted(run.markers) if run.markers[i].get("file")]


def bank_sources(template_paths: Sequence[str | Path]) -> list[str]:
    """The bank inputs to read: files, folders and URLs as given, less this package's
    stage folders that hold no data file (every query was rejected)."""
    sources = []
    for raw in template_paths:
        if is_url(raw):
            sources.append(str(raw))
            continue
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir() and (path / ".work").is_dir() and not any(format_suffix(p) for p in path.iterdir() if p.is_file()):
            continue
        sources.append(str(path))
    return sources


def vectors_of(table) -> np.ndarray:
    """The ``vector`` column of a vector shard as an ``(n, d)`` float32 array."""
    column = table.column("vector").combine_chunks()
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(table), -1)


def repeats(files: Sequence[Path]) -> list[np.ndarray]:
    """For each vector shard, each row's fate: ``KEEP``, ``REPEATED_CONTENT`` (an earlier
    row, in this or an earlier shard, had the same template and description) or
    ``REPEATED_ID`` (an earlier kept row had its id). Holds 64-bit hashes of every row's
    content and id (16 bytes a template), never the rows."""
    import pyarrow.parquet as pq

    from fineinstructions.execution.shards import hashes_of

    contents, ids, sizes = [], [], []
    for path in files:
        table = pq.read_table(path, columns=["id", "content"])
        contents.append(hashes_of(table.column("content").to_pylist()))
        ids.append(hashes_of(table.column("id").to_pylist()))
        sizes.append(len(table))
    if not sizes:
        return []
    content, row_id = np.concatenate(contents), np.concatenate(ids)
    del contents, ids
    fate = np.full(len(content), REPEATED_CONTENT, dtype=np.int8)
    fate[np.unique(content, return_index=True)[1]] = KEEP
    kept = np.flatnonzero(fate == KEEP)
    first_ids = kept[np.unique(row_id[kept], return_index=True)[1]]
    fate[kept] = REPEATED_ID
    fate[first_ids] = KEEP
    return np.split(fate, np.cumsum(sizes)[:-1])


def _repeat_rejects(table, fate: np.ndarray) -> Iterator[str]:
    from fineinstructions.records import RejectRow, row_to_dict

    dropped = np.flatnonzero(fate != KEEP)
    if not len(dropped):
        return
    part = table.select(["id", "template"]).take(dropped).to_pylist()
    for row, code in zip(part, fate[dropped], strict=True):
        reason = DUPLICATE if code == REPEATED_CONTENT else DUPLICATE_ID
        reject = RejectRow(stage="index", input_id=row["id"], reason=reason, detail=REPEATED[reason], input=row["template"])
        yield json.dumps(row_to_dict(reject), ensure_ascii=False) + "\n"


def run_index(
    template_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    embedder: Embedder | None = None,
    executor=None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Index the templates in ``template_paths`` (this package's bank folders, or any
    table of templates: files, folders, URLs, read with ``config.input.templates``'s
    field names) into the folder ``output``. Returns the stats also written to
    ``output/stats.json``; every template skipped is in ``<output>.rejects.jsonl`` with
    its reason."""
    import pyarrow.parquet as pq

    from fineinstructions.execution.runner import beside, read_stats, resolved, run_stage
    from fineinstructions.execution.shards import ReadSpec, plan_corpus
    from fineinstructions.stages.base import outcomes
    from fineinstructions.stages.embed import EmbedStage

    out = Path(output)
    refuse_inputs_inside(out, template_paths)
    with folder_lock(out, "index"):  # one process per output folder
        if overwrite:
            clear(out, INDEX_FOLDER, log=log)
        sources = bank_sources(template_paths)
        started = time.monotonic()
        if embedder is None:
            from fineinstructions.models.embedder import make_embedder

            embedder = make_embedder(config.embed)
        section = config.index
        work = out / ".work" / "vectors"
        read = ReadSpec(on_error=config.input.on_error, templates=config.input.template_fields())
        run = run_stage(
            EmbedStage(config, embedder=embedder), lambda: plan_corpus(sources, "templates", section.shard_size), work,
            inputs={"templates": [resolved(p) for p in template_paths]}, read=read, format="parquet",
            executor=executor, show_progress=show_progress, unit="templates", log=log,
        )
        if (out / "stats.json").exists() and (out / "index.json").exists() and not run.markers.keys() - _built_from(out):
            log("index: finished in an earlier run; kept")
            return json.loads((out / "stats.json").read_text(encoding="utf-8"))
        for name in ("index.json", "index.faiss", "stats.json"):
            (out / name).unlink(missing_ok=True)  # index.json marks completion: never leave an old one
        files = [work / name for name in _vector_tables(run)]
        fates = repeats(files)
        dropped = Counter()
        for fate in fates:
            dropped[DUPLICATE] += int((fate == REPEATED_CONTENT).sum())
            dropped[DUPLICATE_ID] += int((fate == REPEATED_ID).sum())
        count = sum(int((fate == KEEP).sum()) for fate in fates)
        if not count:
            raise UserError(
                f"no valid template in {', '.join(map(str, template_paths))}; see "
                f"{beside(out, '.rejects.jsonl')} for why each row was skipped.\n"
                "  fix: pass a template bank (`fineinstructions templatize` writes one), or say which fields "
                "hold the template and its description with --template-field and --description-field"
            )
        train_fraction = min(1.0, section.train_size / count)
        train_count = count if train_fraction >= 1.0 else int(section.train_size)
        settings = settings_for(count, embedder.dimension, train_count, section)
        log(
            f"index: {count} templates, {settings.kind} index"
            + (f" ({settings.nlist} cells, nprobe {settings.nprobe})" if settings.nlist else "")
            + f", embedder {embedder.identity.model} ({embedder.dimension}-d)"
        )
        builder = IndexBuilder(settings, embedder.identity, directory=out)
        if builder.needs_training:
            sample = []
            for path, fate in zip(files, fates, strict=True):
                table = pq.read_table(path, columns=["id", "vector"])
                ids = table.column("id").to_pylist()
                keep = [i for i in np.flatnonzero(fate == KEEP) if _unit_hash(ids[i]) < train_fraction]
                if keep:
                    sample.append(vectors_of(table.take(keep)))
            sampled = sum(len(v) for v in sample)
            if sampled < (settings.nlist or 1):
                raise UserError(
                    f"only {sampled} templates were sampled to train {settings.nlist} cells.\n"
                    "  fix: raise index.train_size, lower index.nlist, or use index.kind=flat"
                )
            tick = time.monotonic()
            builder.train(np.concatenate(sample))
            del sample
            log(f"index: trained on {sampled} templates in {time.monotonic() - tick:.1f}s")
        rejects = beside(out, ".rejects.jsonl")
        with open(rejects.with_name(rejects.name + ".tmp"), "w", encoding="utf-8") as sink:
            if run.rejects_file is not None and run.rejects_file.exists():
                with open(run.rejects_file, encoding="utf-8") as shard_rejects:
                    shutil.copyfileobj(shard_rejects, sink)
            for path, fate in zip(files, fates, strict=True):
                table = pq.read_table(path)
                sink.writelines(_repeat_rejects(table, fate))
                keep = np.flatnonzero(fate == KEEP)
                if len(keep):
                    table = table.take(keep)
                    builder.add(vectors_of(table), table.column("id").to_pylist(), table.column("complexity").to_pylist(), table)
        rejects.with_name(rejects.name + ".tmp").replace(rejects)
        meta = builder.write(sources=[resolved(p) for p in template_paths], vector_shards=sorted(run.markers))
        c = run.counts
        result = outcomes(c)
        reading = read_stats(run)
        skipped = Counter(reading["skipped"]) + Counter(result["skipped"]) + dropped
        stats = {
            "index": {
                "in": reading["rows"],
                "out": meta["templates"],
                "skipped": dict(skipped.most_common()),
                "failed": result["failed"],
                "kind": settings.kind,
                "settings": settings.to_dict(),
                "embedder": embedder.identity.model,
                "dimension": embedder.dimension,
                "bytes_per_template": meta["bytes_per_template"],
                "seconds": round(time.monotonic() - started, 2),
                "embed_seconds": round(c.get("model_seconds", 0.0), 2),
                "templates_per_s": round(c.get("out", 0) / c["model_seconds"], 1) if c.get("model_seconds") else None,
                "rejects": str(rejects),
            },
            "complexity_histogram": {str(level): n for level, n in sorted(builder.complexity_counts.items())},
        }
        write_json(stats, out / "stats.json")
        return stats
