"""The document side's shards, and the reduce that keeps one document per id.

Identical texts share a content-hash id, and a corpus may repeat ids; a document whose
id an earlier document had is used once (the first wins), the others counted as
``duplicate_id``. Within a shard the reader drops them; across shards, workers write the
64-bit hashes of the ids they read (``.shards/NNNNN.ids.npy``) and one reduce finds the
later occurrences (12 bytes a document, one sort).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.shards import InputShard, ReadSpec
from fineinstructions.stages.base import Stage, StageBatch


def later_duplicates(folder: ShardFolder, markers: dict[int, dict]) -> dict[int, set[int]]:
    """For each shard, the hashes of the document ids an earlier shard already had (from
    the ``NNNNN.ids.npy`` files its workers wrote): 12 bytes a document, one sort."""
    hashes, shard_of = [], []
    for index in sorted(markers):
        path = folder.markers / f"{index:05d}.ids.npy"
        if path.exists():
            found = np.load(path)
            hashes.append(found)
            shard_of.append(np.full(len(found), index, dtype=np.int32))
    if not hashes:
        return {}
    every, shards = np.concatenate(hashes), np.concatenate(shard_of)
    order = np.argsort(every, kind="stable")  # stable: shard order, then read order
    ordered = every[order]
    later = np.zeros(len(every), dtype=bool)
    later[order[1:]] = ordered[1:] == ordered[:-1]
    return {index: set(every[later & (shards == index)].tolist()) for index in np.unique(shards[later]).tolist()}


class DocumentIds(Stage):
    """Reads a piece of the corpus and keeps nothing: its workers write the hashes of the
    ids they read, for :func:`later_duplicates` (the pre-pass of stages given rows that
    ``match`` did not write)."""

    name = "read_ids"
    output = type(None)
    batch_size = 4096

    def process(self, batch: Sequence[Any]) -> StageBatch:
        out = StageBatch()
        for _ in batch:
            out.keep()
        return out


def without_later_duplicates(shards: list[InputShard], work: Path, read: ReadSpec, executor: Any, log: Any) -> list[InputShard]:
    """``shards`` (pieces of the corpus), each told which documents an earlier shard had."""
    from dataclasses import replace

    from fineinstructions.execution.runner import run_stage

    plain = [InputShard(s.index, "documents", piece=s.piece, rows=s.rows) for s in shards]
    run = run_stage(DocumentIds(), lambda: plain, work, inputs={}, read=read, record_ids=True,
                    executor=executor, show_progress=False, log=log)
    later = later_duplicates(ShardFolder(work), run.markers)
    return [replace(s, skip_hashes=tuple(sorted(later.get(s.index, ())))) for s in shards]
