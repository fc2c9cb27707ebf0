"""The stage contract: every stage of the pipeline has this one shape.

A stage turns a batch of input rows into a :class:`StageBatch`. It knows nothing of files
or executors: the runner (:mod:`fineinstructions.execution.runner`) plans the input into
shards, hands each worker the stage, and writes what ``process`` returns.

- ``open(worker)`` loads what a worker holds for the stage's whole life, once: a model,
  an index, a tokenizer. ``worker`` says where that worker's own files go (its request
  cache); the stage never chooses a path itself.
- ``process(batch)`` is pure: no file I/O, no globals; the same batch gives the same
  result.
- ``close()`` releases what ``open`` loaded (and flushes the request cache).

Every outcome is counted through :class:`StageBatch`, so ``in = out + skipped + failed``
holds by construction, and a new counter is one ``batch.add(name=n)`` line: the runner
sums every numeric counter of every shard generically.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from fineinstructions.records import RejectRow

SKIPPED = "skipped:"
FAILED = "failed:"


@dataclass
class StageBatch:
    """One result shape for every stage: output rows, rejects, and a counter of outcomes
    (``in``, ``out``, ``skipped:<reason>``, ``failed:<reason>``) and measures (tokens,
    calls, seconds...)."""

    rows: list = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def keep(self, *rows: Any) -> None:
        """One input went through; ``rows`` are what it became (a document may give several)."""
        self.counts["in"] += 1
        self.counts["out"] += 1
        self.rows.extend(rows)

    def skip(self, reason: str, reject: RejectRow | None = None) -> None:
        """One input gave nothing, for a reason that is not a fault (e.g. ``incompatible``)."""
        self.counts["in"] += 1
        self.counts[SKIPPED + reason] += 1
        if reject is not None:
            self.rejects.append(reject)

    def fail(self, reason: str, reject: RejectRow | None = None) -> None:
        """One input gave nothing because something went wrong (bad model output, ...)."""
        self.counts["in"] += 1
        self.counts[FAILED + reason] += 1
        if reject is not None:
            self.rejects.append(reject)

    def add(self, **measures: int | float) -> None:
        """Add to measures that are not outcomes (tokens, model calls, seconds...)."""
        self.counts.update({k: v for k, v in measures.items() if v})

    def merge(self, other: "StageBatch") -> None:
        self.rows.extend(other.rows)
        self.rejects.extend(other.rejects)
        self.counts.update(other.counts)


def outcomes(counts: dict[str, Any]) -> dict[str, Any]:
    """``in``, ``out`` and the ``skipped``/``failed`` reasons of summed counts, as
    ``stats.json`` shows them (reasons by count, largest first)."""
    skipped = Counter({k[len(SKIPPED):]: v for k, v in counts.items() if k.startswith(SKIPPED)})
    failed = Counter({k[len(FAILED):]: v for k, v in counts.items() if k.startswith(FAILED)})
    return {
        "in": counts.get("in", 0),
        "out": counts.get("out", 0),
        "skipped": dict(skipped.most_common()),
        "failed": dict(failed.most_common()),
    }


@dataclass(frozen=True)
class Worker:
    """Where a worker runs: ``worker_id`` names its own files; ``cache`` is the request
    cache it writes (``None``: no cache) and ``shared_cache`` one it only reads (on a
    cluster, the stage's merged cache)."""

    worker_id: str
    cache: str | None = None
    shared_cache: str | None = None
    threads: int | None = None


class Stage:
    """What every stage is. Subclasses set ``name``, ``version`` and ``output`` (the row
    type ``process`` returns) and implement ``process``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    output: ClassVar[type]
    batch_size: int = 64

    def check(self) -> None:
        """Raise a :class:`~fineinstructions.errors.UserError` if this stage's workers
        cannot run here (e.g. a llama.cpp build that crashes on this CPU). The runner
        calls it once, in the driver, before it writes anything."""

    def open(self, worker: Worker) -> None:
        """Load what the worker holds (model, index, tokenizer); called once per worker."""

    def process(self, batch: Sequence[Any]) -> StageBatch:
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``open`` loaded."""

    def info(self) -> dict[str, Any]:
        """What an opened worker found out that the driver reports (e.g. the threshold a
        matcher calibrated for its embedder); kept in each shard's marker."""
        return {}

    def settings(self) -> dict[str, Any]:
        """What changes the rows this stage makes (its part of the output fingerprint)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"stage": self.name, "version": self.version, "settings": self.settings()}
