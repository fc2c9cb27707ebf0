"""The embed stage of the index build: templates → their description vectors.

Its input is a template bank read by :mod:`fineinstructions.text.bank` (parsed,
checked, deduplicated within the shard), so every row has a description to embed."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from fineinstructions.records import EmbeddedTemplateRow, TemplateRow
from fineinstructions.stages.base import Stage, StageBatch


class EmbedStage(Stage):
    """Embeds each template's compatible-document description (plain mean pooling)."""

    name = "index"
    version = "2"
    output = EmbeddedTemplateRow

    def __init__(self, config: Any, *, embedder: Any = None) -> None:
        self.config = config
        self.ready = embedder
        self.embedder: Any = None
        self.batch_size = config.index.batch_size

    def __getstate__(self) -> dict:
        return {**self.__dict__, "ready": None, "embedder": None}

    def settings(self) -> dict[str, Any]:
        from fineinstructions.config import output_fingerprint

        return {"embed": output_fingerprint(self.config.embed)}

    def open(self, worker: Any) -> None:
        if self.ready is not None:
            self.embedder = self.ready
        else:
            from fineinstructions.models.embedder import make_embedder

            self.embedder = make_embedder(self.config.embed)

    def close(self) -> None:
        self.embedder = None

    def process(self, batch: Sequence[TemplateRow]) -> StageBatch:
        out = StageBatch()
        if not batch:
            return out
        tick = time.monotonic()
        vectors = np.asarray(self.embedder.embed([row.compatible_document_description for row in batch]), dtype=np.float32)
        out.add(model_seconds=round(time.monotonic() - tick, 3))
        for row, vector in zip(batch, vectors, strict=True):
            out.keep(
                EmbeddedTemplateRow(
                    id=row.id, content=row.content_key(), query_id=row.query_id, template=row.template,
                    variables=tuple(row.variables), complexity=row.complexity, vector=vector,
                )
            )
        return out
