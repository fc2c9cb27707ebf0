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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.progress import Progress
from fineinstructions.index import IndexBuilder, settings_for
from fineinstructions.io import read_rows, write_json
from fineinstructions.io.writers import prepare_output_dir
from fineinstructions.models.embedder import Embedder
from fineinstructions.records import TemplateRow


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") / 2**64


@dataclass
class EmbedTask:
    """Embedding one batch of templates' descriptions (all of them, or the training
    sample: those whose id hashes below ``sample``), as a worker runs it."""

    config: Config
    sample: float | None = None
    embedder: Embedder | None = None  # a ready embedder (tests, the local executor), used only in this process
    stage: str = "index"

    @property
    def batch_size(self) -> int:
        return self.config.index.batch_size

    def start(self, place) -> Callable[[list[TemplateRow]], dict | None]:
        embedder = self.embedder
        if embedder is None:
            from fineinstructions.models.embedder import make_embedder

            embedder = make_embedder(self.config.embed)
        sample = self.sample

        def embed(rows: list[TemplateRow]) -> dict | None:
            rows = [
                row for row in rows
                if row.compatible_document_description.strip() and (sample is None or sample >= 1.0 or _unit_hash(row.id) < sample)
            ]
            if not rows:
                return None
            tick = time.monotonic()
            vectors = embedder.embed([row.compatible_document_description for row in rows])
            return {
                "ids": [row.id for row in rows],
                "complexity": [row.complexity for row in rows],
                "vectors": vectors,
                "seconds": time.monotonic() - tick,
            }

        return embed


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
    folder ``output``. Returns the stats also written to ``output/stats.json``."""
    from fineinstructions.execution.executor import Files, LocalExecutor

    executor = executor or LocalExecutor()
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
    source = Files(tuple(map(str, template_paths)), "rows", row_type=TemplateRow)
    # Embedding runs on the executor's workers; the index itself is built here.
    local = embedder if executor.kind == "local" else None
    if builder.needs_training:
        progress = Progress("index: training sample", unit="templates", enabled=show_progress)
        vectors = []
        for item in executor.map(source, EmbedTask(config, train_fraction, local)):
            vectors.append(item["vectors"])
            embed_seconds += item["seconds"]
            progress.update(len(item["ids"]))
        progress.close()
        sample = sum(len(v) for v in vectors)
        if sample < (settings.nlist or 1):
            raise UserError(
                f"only {sample} templates were sampled to train {settings.nlist} cells.\n"
                "  fix: raise index.train_size, lower index.nlist, or use index.kind=flat"
            )
        tick = time.monotonic()
        builder.train(np.concatenate(vectors))
        log(f"index: trained on {sample} templates in {time.monotonic() - tick:.1f}s")
    progress = Progress("index", total=count, unit="templates", enabled=show_progress)
    seen: set[str] = set()
    duplicates = 0
    for item in executor.map(source, EmbedTask(config, None, local)):
        embed_seconds += item["seconds"]
        keep = []
        for i, template_id in enumerate(item["ids"]):
            if template_id in seen:
                duplicates += 1
                continue
            seen.add(template_id)
            keep.append(i)
        if not keep:
            continue
        builder.add(item["vectors"][keep], [item["ids"][i] for i in keep], [item["complexity"][i] for i in keep])
        progress.update(len(keep))
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
