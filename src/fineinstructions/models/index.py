"""The FAISS index of template descriptions (DESIGN §2.3).

Each template's compatible-document description is embedded (mean pooling,
L2-normalised) and stored in an inner-product index, so a search scores cosine
similarity. The index type follows the bank's size:

========  =========================================  ==========================================
kind      what it is                                 memory per template (d = dimension)
========  =========================================  ==========================================
flat      exact search over every vector             4·d bytes (1,536 B at d = 384)
ivf       vectors bucketed into ``nlist`` k-means    4·d + 8 bytes; searches ``nprobe`` cells
          cells; only ``nprobe`` cells are scanned
ivfsq     as ivf, each component stored in 8 bits    d + 8 bytes (392 B at d = 384)
ivfpq     as ivf, each vector compressed by product  ``pq_bytes`` + 8 bytes (d / 4 by default:
          quantisation                               104 B at d = 384, 264 B at d = 1024)
hnsw      a navigable small-world graph              4·d + about 8·hnsw_m bytes
========  =========================================  ==========================================

(plus the template ids and complexities, about 30 bytes a template). ``auto`` picks
``flat`` up to ``index.flat_limit`` templates (100K), ``hnsw`` up to ``index.hnsw_limit``
(2M), ``ivfsq`` up to ``index.ivfpq_above`` (10M) and ``ivfpq`` beyond: 18M templates of
1024-d float32 would be 74 GB exact, 18 GB as ivfsq and under 5 GB as ivfpq.
``benchmarks/bench_index.py`` measures what each costs: on clustered synthetic vectors
HNSW keeps recall@6 near 0.97 at 1M templates for about 60 times exact search's speed,
where IVF needs many more probed cells as the bank grows; scalar quantisation loses
almost nothing over plain IVF, product quantisation at d / 4 bytes noticeably more.

An index folder holds ``index.faiss``, ``templates.parquet`` (template id and complexity
in index order) and ``index.json`` (the embedder's identity, the kind and its settings).
Searching it with a different embedder is refused.

IVF quantisers are trained on a sample of the bank before any vector is added; adding
happens in batches, so building never needs the bank's vectors in memory at once (except
for ``flat`` and ``hnsw``, which store them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.models.embedder import EmbedderIdentity

INDEX_FILE = "index.faiss"
TEMPLATES_FILE = "templates.parquet"
META_FILE = "index.json"
KINDS = ("flat", "ivf", "ivfsq", "ivfpq", "hnsw")
DEFAULT_NPROBE = 64


DETAIL_COLUMNS = ("query_id", "template", "variables")


def require_same_embedder(built_with: EmbedderIdentity, embedder: EmbedderIdentity, where: str = "") -> None:
    """Refuse to search an index with vectors from another model."""
    if built_with.same_model(embedder):
        return
    raise UserError(
        f"the index{' ' + where if where else ''} was built with the embedder {built_with.name!r} "
        f"({built_with.model}, {built_with.dimension}-d, fingerprint {built_with.fingerprint}), "
        f"but this run embeds documents with {embedder.name!r} ({embedder.model}, "
        f"{embedder.dimension}-d, fingerprint {embedder.fingerprint}); their vectors are not comparable.\n"
        f"  fix: match with --set embed.model={built_with.name}, or rebuild the index with this embedder "
        "(index and match must use the same embedder)"
    )


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss-cpu", "embedded", "the template index") from None
    return faiss


def choose_kind(count: int, config: Any) -> str:
    """The index kind ``config`` (an IndexConfig) asks for, for a bank of ``count``."""
    if config.kind != "auto":
        return config.kind
    if count <= config.flat_limit:
        return "flat"
    if count <= config.hnsw_limit:
        return "hnsw"
    return "ivfsq" if count <= config.ivfpq_above else "ivfpq"


def default_nlist(count: int, train_count: int) -> int:
    """About 4·sqrt(count) cells, but at least 39 training vectors per cell."""
    return max(1, min(int(4 * math.sqrt(max(count, 1))), train_count // 39))


def default_pq_bytes(dimension: int) -> int:
    """About d/4 bytes, rounded to a divisor of d (PQ splits vectors into equal parts)."""
    target = max(1, dimension // 4)
    divisors = [m for m in range(1, dimension + 1) if dimension % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), -m))


@dataclass
class IndexSettings:
    kind: str
    nlist: int | None = None
    nprobe: int = DEFAULT_NPROBE
    pq_bytes: int | None = None
    hnsw_m: int = 32
    hnsw_ef_search: int = 128

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @property
    def needs_training(self) -> bool:
        return self.kind in ("ivf", "ivfsq", "ivfpq")


def settings_for(count: int, dimension: int, train_count: int, config: Any) -> IndexSettings:
    """Concrete settings for a bank of ``count`` templates (``train_count`` of them
    sampled for training)."""
    kind = choose_kind(count, config)
    settings = IndexSettings(
        kind=kind, nprobe=config.nprobe or DEFAULT_NPROBE, hnsw_m=config.hnsw_m, hnsw_ef_search=config.hnsw_ef_search
    )
    if settings.needs_training:
        settings.nlist = config.nlist or default_nlist(count, train_count)
        if train_count < settings.nlist:
            raise UserError(
                f"an {kind} index with {settings.nlist} cells needs at least {settings.nlist} "
                f"training templates; the bank gives {train_count}.\n"
                "  fix: --set index.kind=flat for a bank this small, or a smaller index.nlist"
            )
    if kind == "ivfpq":
        settings.pq_bytes = config.pq_bytes or default_pq_bytes(dimension)
        if dimension % settings.pq_bytes:
            raise UserError(
                f"index.pq_bytes={settings.pq_bytes} must divide the embedding dimension {dimension}"
            )
    return settings


def new_faiss_index(settings: IndexSettings, dimension: int):
    faiss = _faiss()
    ip = faiss.METRIC_INNER_PRODUCT
    if settings.kind == "flat":
        return faiss.IndexFlatIP(dimension)
    if settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, ip)
        index.hnsw.efConstruction = max(40, 2 * settings.hnsw_m)
        return index
    quantizer = faiss.IndexFlatIP(dimension)
    if settings.kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dimension, settings.nlist, ip)
    elif settings.kind == "ivfsq":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dimension, settings.nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    elif settings.kind == "ivfpq":
        index = faiss.IndexIVFPQ(quantizer, dimension, settings.nlist, settings.pq_bytes, 8, ip)
    else:
        raise UserError(f"unknown index kind {settings.kind!r}; use one of {', '.join(KINDS)}")
    return index


def apply_search_settings(index: Any, settings: IndexSettings) -> None:
    faiss = _faiss()
    if settings.kind in ("ivf", "ivfsq", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = min(settings.nprobe, settings.nlist or settings.nprobe)
    elif settings.kind == "hnsw":
        index.hnsw.efSearch = settings.hnsw_ef_search


@dataclass
class TemplateIndex:
    """A searchable bank: the FAISS index, and each position's template id and complexity."""

    index: Any
    ids: np.ndarray  # object array of template ids, in index order
    complexity: np.ndarray  # int32
    identity: EmbedderIdentity
    settings: IndexSettings
    info: dict[str, Any] = field(default_factory=dict)
    # Per position: query_id, template, variables (an Arrow table, not Python objects);
    # None for an index built before it was kept.
    details: Any = None

    def template_details(self, position: int) -> dict[str, Any]:
        """What a match row carries of the template at ``position``."""
        if self.details is None:
            return {}
        row = self.details.slice(position, 1).to_pylist()[0]
        return {"query_id": row["query_id"] or "", "template": row["template"] or "", "variables": tuple(row["variables"] or ())}

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine scores and positions ``(n, k)`` of the nearest templates to each
        L2-normalised vector; missing neighbours have position -1."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.identity.dimension:
            raise ValueError(f"expected vectors (n, {self.identity.dimension}), got {vectors.shape}")
        scores, positions = self.index.search(vectors, min(k, max(len(self), 1)))
        return scores, positions

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the index folder; returns what ``index.json`` holds."""
        import pyarrow as pa

        from fineinstructions.io.writers import atomic_write, write_table

        faiss = _faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / INDEX_FILE, lambda tmp: faiss.write_index(self.index, str(tmp)))
        columns = {"id": pa.array(self.ids.tolist(), pa.string()), "complexity": pa.array(self.complexity, pa.int32())}
        if self.details is not None:
            columns.update({name: self.details.column(name) for name in DETAIL_COLUMNS})
        table = pa.table(columns)
        write_table(table, directory / TEMPLATES_FILE, "parquet")
        return _write_meta(directory, len(self), self.identity, self.settings, self.info)

    @staticmethod
    def describe(directory: str | Path) -> tuple[dict[str, Any], EmbedderIdentity, IndexSettings, np.ndarray]:
        """What an index folder holds — ``index.json``, the embedder, the settings and each
        template's complexity — without reading the FAISS index itself (the driver's view;
        workers load the index)."""
        import pyarrow.parquet as pq

        meta = _meta(Path(directory))
        complexity = pq.read_table(Path(directory) / TEMPLATES_FILE, columns=["complexity"]).column(0).to_numpy()
        return meta, EmbedderIdentity.from_dict(meta["embedder"]), IndexSettings(**meta["settings"]), complexity.astype(np.int32)

    @classmethod
    def load(cls, directory: str | Path, *, embedder: EmbedderIdentity | None = None, nprobe: int | None = None) -> "TemplateIndex":
        """Load an index folder; with ``embedder``, refuse one built by another model."""
        import pyarrow.parquet as pq

        faiss = _faiss()
        directory = Path(directory)
        meta = _meta(directory)
        identity = EmbedderIdentity.from_dict(meta["embedder"])
        if embedder is not None:
            require_same_embedder(identity, embedder, str(directory))
        settings = IndexSettings(**meta["settings"])
        if nprobe is not None:
            settings.nprobe = nprobe
        index = faiss.read_index(str(directory / INDEX_FILE))
        apply_search_settings(index, settings)
        table = pq.read_table(directory / TEMPLATES_FILE)
        ids = np.asarray(table.column("id").to_pylist(), dtype=object)
        complexity = table.column("complexity").to_numpy().astype(np.int32)
        if len(ids) != index.ntotal:
            raise UserError(
                f"{directory} is damaged: {index.ntotal} vectors but {len(ids)} template ids.\n"
                "  fix: rebuild it with `fineinstructions index`"
            )
        info = {k: v for k, v in meta.items() if k not in ("format", "templates", "embedder", "settings")}
        details = table.select(list(DETAIL_COLUMNS)) if set(DETAIL_COLUMNS) <= set(table.column_names) else None
        return cls(index, ids, complexity, identity, settings, info, details)


def _meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise UserError(
            f"{directory} is not a template index (no {META_FILE}).\n"
            "  fix: build one with `fineinstructions index TEMPLATES_DIR -o INDEX_DIR`"
        )
    return json.loads(meta_path.read_text(encoding="utf-8"))


class IndexBuilder:
    """Builds a template index in batches: ``train`` (IVF kinds, once), then ``add`` any
    number of times, then ``finish`` (a :class:`TemplateIndex` in memory) or, when made
    with a ``directory``, ``write`` (the index folder).

    With a ``directory`` each added batch's template ids and details go straight to the
    folder's templates table, so memory holds the FAISS index and one batch, whatever
    the bank's size."""

    def __init__(self, settings: IndexSettings, identity: EmbedderIdentity, directory: str | Path | None = None) -> None:
        self.settings = settings
        self.identity = identity
        self.index = new_faiss_index(settings, identity.dimension)
        self.complexity_counts: dict[int, int] = {}
        self.directory = Path(directory) if directory is not None else None
        self._writer: Any = None
        self._ids: list[str] = []
        self._complexity: list[int] = []
        self._details: list = []  # Arrow tables of DETAIL_COLUMNS, one per add

    @property
    def needs_training(self) -> bool:
        return self.settings.needs_training and not self.index.is_trained

    def train(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.train(vectors)

    def add(self, vectors: np.ndarray, ids: Sequence[str], complexity: Sequence[int], details: Any = None) -> None:
        """Add vectors with their template ids and complexities; ``details`` (an Arrow
        table of ``DETAIL_COLUMNS``, one row per vector) is kept for match rows."""
        if self.needs_training:
            raise RuntimeError("train the index before adding vectors")
        if not (len(vectors) == len(ids) == len(complexity)):
            raise ValueError("vectors, ids and complexity must have the same length")
        if not len(ids):
            return
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        for level in complexity:
            self.complexity_counts[int(level)] = self.complexity_counts.get(int(level), 0) + 1
        if self.directory is not None:
            self._stream(ids, complexity, details)
            return
        self._ids.extend(ids)
        self._complexity.extend(int(c) for c in complexity)
        if details is not None:
            self._details.append(details.select(list(DETAIL_COLUMNS)))

    def _stream(self, ids: Sequence[str], complexity: Sequence[int], details: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if details is None:
            raise ValueError("an index written as it is built needs each batch's details")
        table = pa.table({"id": pa.array(list(ids), pa.string()), "complexity": pa.array(list(complexity), pa.int32()),
                          **{name: details.column(name) for name in DETAIL_COLUMNS}})
        if self._writer is None:
            assert self.directory is not None
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._partial, table.schema)
        self._writer.write_table(table)

    @property
    def _partial(self) -> Path:
        assert self.directory is not None
        return self.directory / f".{TEMPLATES_FILE}.partial"

    def finish(self, **info: Any) -> TemplateIndex:
        """The index, in memory (a builder made without a directory)."""
        if self.directory is not None:
            raise RuntimeError("this builder writes its index folder: call write()")
        apply_search_settings(self.index, self.settings)
        return TemplateIndex(
            self.index,
            np.asarray(self._ids, dtype=object),
            np.asarray(self._complexity, dtype=np.int32),
            self.identity,
            self.settings,
            dict(info),
            _concat(self._details) if self._details and sum(len(t) for t in self._details) == len(self._ids) else None,
        )

    def write(self, **info: Any) -> dict[str, Any]:
        """Write the index folder (the FAISS index, the templates table, then
        ``index.json``, which marks it complete); returns what ``index.json`` holds."""
        import os

        from fineinstructions.io.writers import atomic_write

        if self.directory is None:
            raise RuntimeError("this builder keeps its index in memory: call finish()")
        if self._writer is None:
            raise ValueError("no template was added to the index")
        self._writer.close()
        self._writer = None
        apply_search_settings(self.index, self.settings)
        faiss = _faiss()
        atomic_write(self.directory / INDEX_FILE, lambda tmp: faiss.write_index(self.index, str(tmp)))
        os.replace(self._partial, self.directory / TEMPLATES_FILE)
        return _write_meta(self.directory, int(self.index.ntotal), self.identity, self.settings, info)


def _write_meta(directory: Path, count: int, identity: EmbedderIdentity, settings: IndexSettings, info: dict) -> dict[str, Any]:
    from fineinstructions.io.writers import write_json

    meta = {
        "format": 1,
        "templates": count,
        "embedder": identity.to_dict(),
        "settings": settings.to_dict(),
        "bytes_per_template": round((directory / INDEX_FILE).stat().st_size / max(count, 1), 1),
        **info,
    }
    write_json(meta, directory / META_FILE)  # written last: its presence marks a complete index
    return meta


def _concat(tables: list) -> Any:
    import pyarrow as pa

    return pa.concat_tables(tables).combine_chunks()
