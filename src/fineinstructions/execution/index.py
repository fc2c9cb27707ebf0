"""Build the template index from a template bank, streaming.

Passes over the bank (reading is cheap next to embedding):

1. count the templates, which picks the index kind;
2. for IVF kinds only: embed a sample of about ``index.train_size`` templates, chosen by
   a hash of their id (uniform over the bank, whatever its order), and train the
   quantiser on it;
3. embed every description in batches of ``index.batch_size`` and add them.

So memory holds one batch of vectors plus the index itself, never the whole bank's
float32 vectors (unless the kind stores them: flat, hnsw).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.templatize import batched
from fineinstructions.index import IndexBuilder, settings_for
from fineinstructions.io import read_rows, write_json
from fineinstructions.io.writers import prepare_output_dir
from fineinstructions.models.embedder import Embedder
from fineinstructions.records import TemplateRow


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") / 2**64


def _templates(paths: Sequence[str | Path]) -> Iterator[TemplateRow]:
    for row in read_rows(paths, TemplateRow):
        if row.compatible_document_description.strip():
            yield row


def run_index(
    template_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    embedder: Embedder | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Index the templates in ``template_paths`` (bank folders or shard files) into the
    folder ``output``. Returns the stats also written to ``output/stats.json``."""
    out = prepare_output_dir(output, overwrite=overwrite)
    for name in ("index.json", "index.faiss"):
        (out / name).unlink(missing_ok=True)  # index.json marks completion: never leave an old one
    started = time.monotonic()
    count = 0
    empty = 0
    for row in read_rows(template_paths, TemplateRow):
        if row.compatible_document_description.strip():
            count += 1
        else:
            empty += 1
    if not count:
        raise UserError(
            f"no template with a compatible-document description in {', '.join(map(str, template_paths))}.\n"
            "  fix: pass the folder `fineinstructions templatize` wrote"
        )
    if embedder is None:
        from fineinstructions.models.embedder import make_embedder

        embedder = make_embedder(config.embed)
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
    embed_seconds = 0.0
    if builder.needs_training:
        sample = [
            row.compatible_document_description
            for row in _templates(template_paths)
            if train_fraction >= 1.0 or _unit_hash(row.id) < train_fraction
        ]
        if len(sample) < (settings.nlist or 1):
            raise UserError(
                f"only {len(sample)} templates were sampled to train {settings.nlist} cells.\n"
                "  fix: raise index.train_size, lower index.nlist, or use index.kind=flat"
            )
        progress = Progress("index: training sample", total=len(sample), unit="templates", enabled=show_progress)
        vectors = []
        for batch in batched(sample, section.batch_size):
            tick = time.monotonic()
            vectors.append(embedder.embed(batch))
            embed_seconds += time.monotonic() - tick
            progress.update(len(batch))
        progress.close()
        tick = time.monotonic()
        builder.train(np.concatenate(vectors))
        log(f"index: trained on {len(sample)} templates in {time.monotonic() - tick:.1f}s")
    progress = Progress("index", total=count, unit="templates", enabled=show_progress)
    seen: set[str] = set()
    duplicates = 0
    for batch in batched(_templates(template_paths), section.batch_size):
        fresh = []
        for row in batch:
            if row.id in seen:
                duplicates += 1
                continue
            seen.add(row.id)
            fresh.append(row)
        if not fresh:
            continue
        tick = time.monotonic()
        vectors = embedder.embed([row.compatible_document_description for row in fresh])
        embed_seconds += time.monotonic() - tick
        builder.add(vectors, [row.id for row in fresh], [row.complexity for row in fresh])
        progress.update(len(fresh))
    progress.close()
    seconds = time.monotonic() - started
    index = builder.finish(sources=[str(p) for p in template_paths])
    meta = index.save(out)
    stats = {
        "index": {
            "in": count + empty,
            "out": len(index),
            "skipped": {k: v for k, v in {"empty_description": empty, "duplicate_id": duplicates}.items() if v},
            "failed": {},
            "kind": settings.kind,
            "settings": settings.to_dict(),
            "embedder": embedder.identity.model,
            "dimension": embedder.dimension,
            "bytes_per_template": meta["bytes_per_template"],
            "seconds": round(seconds, 2),
            "embed_seconds": round(embed_seconds, 2),
            "templates_per_s": round(len(index) / embed_seconds, 1) if embed_seconds else None,
        },
        "complexity_histogram": {
            str(level): int(n) for level, n in zip(*np.unique(index.complexity, return_counts=True), strict=False)
        },
    }
    write_json(stats, out / "stats.json")
    return stats
