"""Build the template index from a template bank, streaming.

Two steps: workers embed the bank's shards and write vector shards; then the driver
(for IVF kinds) trains the quantiser on a sample of about ``index.train_size`` templates
chosen by a hash of their id (uniform over the bank, whatever its order) and adds every
vector, shard by shard. So memory holds one shard of vectors plus the index itself,
never the whole bank's float32 vectors (unless the kind stores them: flat, hnsw).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.io import write_json
from fineinstructions.models.embedder import Embedder
from fineinstructions.models.index import IndexBuilder, settings_for


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") / 2**64


def _built_from(out: Path) -> set[int]:
    """The vector shards the index in ``out`` was built from."""
    meta = json.loads((out / "index.json").read_text(encoding="utf-8"))
    return set(meta.get("vector_shards", ()))


def _vector_tables(run) -> list[Path]:
    return [Path(run.markers[i]["file"]) for i in sorted(run.markers) if run.markers[i].get("file")]


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
    """Index the templates in ``template_paths`` (bank folders or shard files) into the
    folder ``output``. Returns the stats also written to ``output/stats.json``.

    The embed stage runs on the executor's workers and writes vector shards under
    ``INDEX_DIR/.work/vectors``; the FAISS build is the reduce step, here: it holds the
    index itself plus the template ids and texts (about 30 + the template's length bytes
    a template), and for IVF kinds the training sample's vectors."""
    import pyarrow.parquet as pq

    from fineinstructions.execution.ledger import data_files
    from fineinstructions.execution.runner import resolved, run_stage
    from fineinstructions.execution.shards import plan_files
    from fineinstructions.records import TemplateRow
    from fineinstructions.stages.base import outcomes
    from fineinstructions.stages.embed import EmbedStage

    out = Path(output)
    if overwrite and out.exists():
        shutil.rmtree(out)
    for path in map(Path, template_paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    started = time.monotonic()
    if embedder is None:
        from fineinstructions.models.embedder import make_embedder

        embedder = make_embedder(config.embed)
    work = out / ".work" / "vectors"
    run = run_stage(
        EmbedStage(config, embedder=embedder), lambda: plan_files(data_files(template_paths), TemplateRow), work,
        inputs={"templates": [resolved(p) for p in template_paths]}, format="parquet",
        executor=executor, show_progress=show_progress, unit="templates", log=log,
    )
    if (out / "stats.json").exists() and (out / "index.json").exists() and not run.markers.keys() - _built_from(out):
        log("index: finished in an earlier run; kept")
        return json.loads((out / "stats.json").read_text(encoding="utf-8"))
    for name in ("index.json", "index.faiss", "stats.json"):
        (out / name).unlink(missing_ok=True)  # index.json marks completion: never leave an old one
    count = run.counts.get("out", 0)
    if not count:
        raise UserError(
            f"no template with a compatible-document description in {', '.join(map(str, template_paths))}.\n"
            "  fix: pass the folder `fineinstructions templatize` wrote"
        )
    section = config.index
    train_fraction = min(1.0, section.train_size / count)
    train_count = count if train_fraction >= 1.0 else int(section.train_size)
    settings = settings_for(count, embedder.dimension, train_count, section)
    log(
        f"index: {count} templates, {settings.kind} index"
        + (f" ({settings.nlist} cells, nprobe {settings.nprobe})" if settings.nlist else "")
        + f", embedder {embedder.identity.model} ({embedder.dimension}-d)"
    )
    builder = IndexBuilder(settings, embedder.identity)
    files = [work / name for name in _vector_tables(run)]

    def vectors(table) -> np.ndarray:
        return np.asarray(table.column("vector").to_pylist(), dtype=np.float32).reshape(len(table), -1)

    if builder.needs_training:
        sample = []
        for path in files:
            table = pq.read_table(path)
            keep = [i for i, template_id in enumerate(table.column("id").to_pylist()) if _unit_hash(template_id) < train_fraction]
            if keep:
                sample.append(vectors(table.take(keep)))
        sampled = sum(len(v) for v in sample)
        if sampled < (settings.nlist or 1):
            raise UserError(
                f"only {sampled} templates were sampled to train {settings.nlist} cells.\n"
                "  fix: raise index.train_size, lower index.nlist, or use index.kind=flat"
            )
        tick = time.monotonic()
        builder.train(np.concatenate(sample))
        log(f"index: trained on {sampled} templates in {time.monotonic() - tick:.1f}s")
    seen: set[str] = set()
    duplicates = 0
    for path in files:
        table = pq.read_table(path)
        keep = []
        for i, template_id in enumerate(table.column("id").to_pylist()):
            if template_id in seen:
                duplicates += 1
                continue
            seen.add(template_id)
            keep.append(i)
        if keep:
            table = table.take(keep)
            builder.add(vectors(table), table.column("id").to_pylist(), table.column("complexity").to_pylist(), table)
    index = builder.finish(sources=[str(p) for p in template_paths], vector_shards=sorted(run.markers))
    meta = index.save(out)
    c = run.counts
    result = outcomes(c)
    stats = {
        "index": {
            "in": result["in"],
            "out": len(index),
            "skipped": {**result["skipped"], **({"duplicate_id": duplicates} if duplicates else {})},
            "failed": result["failed"],
            "kind": settings.kind,
            "settings": settings.to_dict(),
            "embedder": embedder.identity.model,
            "dimension": embedder.dimension,
            "bytes_per_template": meta["bytes_per_template"],
            "seconds": round(time.monotonic() - started, 2),
            "embed_seconds": round(c.get("model_seconds", 0.0), 2),
            "templates_per_s": round(len(index) / c["model_seconds"], 1) if c.get("model_seconds") else None,
        },
        "complexity_histogram": {
            str(level): int(n) for level, n in zip(*np.unique(index.complexity, return_counts=True), strict=False)
        },
    }
    write_json(stats, out / "stats.json")
    return stats
