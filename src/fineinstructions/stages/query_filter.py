"""The query filter: which real queries reach the templatizer (DESIGN §2.1).

Three filters run in order, each on what the one before kept: exact and near-duplicate
removal, decontamination against protected evaluation prompts, and a harmful-content
check (called once per batch). Every dropped query carries its reason:

- ``exact_duplicate``, ``near_duplicate``; ``duplicate_id`` (another query under an id an
  earlier kept one has: the first is kept);
- ``contaminated:<set name>`` (the protected file it overlaps);
- ``harmful:<category>`` (the checker's category).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Sequence

from fineinstructions.config import QueriesConfig
from fineinstructions.records import QueryRow, RejectRow
from fineinstructions.stages.base import Stage, StageBatch
from fineinstructions.stages.decontaminate import Decontaminator
from fineinstructions.stages.dedup import Deduplicator
from fineinstructions.stages.moderation import HarmChecker
from fineinstructions.text.bank import DUPLICATE_ID

CONTAMINATED = "contaminated"
HARMFUL = "harmful"


class QueryFilter:
    """Deduplication, decontamination and harm checking of query batches, in that order.

    Stateful across :meth:`filter` calls: a query duplicating one kept in an earlier
    batch is dropped too, so feeding the batches of a stream in order gives the same
    result as feeding it whole. A query dropped as contaminated or harmful was still
    seen by deduplication, so its later copies are dropped as duplicates. Without a
    ``checker`` or ``decontaminator`` that filter is skipped; the runner builds both from
    the configuration (they read files and reach endpoints; the filter does not).
    """

    def __init__(
        self,
        config: QueriesConfig,
        *,
        checker: HarmChecker | None = None,
        decontaminator: Decontaminator | None = None,
    ) -> None:
        self.config = config
        self.checker = checker
        self.decontaminator = decontaminator
        self.deduplicator = Deduplicator(
            exact=config.exact_dedup,
            near_threshold=config.near_dedup_threshold,
            num_perm=config.minhash_permutations,
            shingle_size=config.shingle_size,
        )
        self._counts: Counter[str] = Counter()
        self._ids: set[int] = set()  # 8-byte digests of the ids seen: about 70 bytes a query
        self._seen = 0
        self._kept = 0

    @property
    def counts(self) -> Counter[str]:
        """Dropped queries so far, by reason."""
        return Counter(self._counts)

    @property
    def stats(self) -> dict[str, Any]:
        """The stage's counts so far: ``in = out + sum(skipped)``."""
        return {"in": self._seen, "out": self._kept, "skipped": dict(self._counts)}

    def filter(
        self, rows: Sequence[QueryRow]
    ) -> tuple[list[QueryRow], list[tuple[QueryRow, str]]]:
        """The rows kept, in order, and ``(row, reason)`` for each dropped row, in order."""
        reasons: list[str | None] = [self._first_reason(row) for row in rows]
        survivors = [i for i, reason in enumerate(reasons) if reason is None]
        if self.checker is not None and survivors:
            verdicts = self.checker.check([rows[i].text for i in survivors])
            if len(verdicts) != len(survivors):
                raise RuntimeError(
                    f"harm checker {self.checker.name!r} gave {len(verdicts)} verdicts "
                    f"for {len(survivors)} texts"
                )
            for i, category in zip(survivors, verdicts, strict=True):
                if category is not None:
                    reasons[i] = f"{HARMFUL}:{category}"
        kept = [row for row, reason in zip(rows, reasons, strict=True) if reason is None]
        dropped = [(row, reason) for row, reason in zip(rows, reasons, strict=True) if reason is not None]
        self._seen += len(rows)
        self._kept += len(kept)
        self._counts.update(reason for _, reason in dropped)
        return kept, dropped

    def _first_reason(self, row: QueryRow) -> str | None:
        reason = self.deduplicator.check(row.text)
        if reason is None:
            # Ids must be unique (a template names its query by id): the first is kept, as
            # for documents. (A content-hash id repeats with its text: dedup names that.)
            digest = int.from_bytes(hashlib.blake2b(row.id.encode("utf-8"), digest_size=8).digest(), "little")
            if digest in self._ids:
                return DUPLICATE_ID
            self._ids.add(digest)
        if reason is None and self.decontaminator is not None:
            protected_set = self.decontaminator.check(row.text)
            if protected_set is not None:
                reason = f"{CONTAMINATED}:{protected_set}"
        return reason


_EXPLAIN = {
    DUPLICATE_ID: "a query with the same id came earlier (ids must be unique; the first is kept)",
    "exact_duplicate": "the same query (ignoring case and spacing) came earlier",
    "near_duplicate": "a near-identical query (MinHash) came earlier",
}


def dropped_query(query: QueryRow, reason: str) -> RejectRow:
    """The reject row of a query the filters dropped, with a sentence saying why."""
    kind, _, detail = reason.partition(":")
    explain = {
        **_EXPLAIN,
        CONTAMINATED: f"shares a long n-gram with protected set {detail!r}",
        HARMFUL: f"flagged as {detail!r} by the harmful-content filter",
    }
    return RejectRow(stage="filter_queries", input_id=query.id, reason=reason, detail=explain.get(kind, reason), input=query.text)


class FilterQueriesStage(Stage):
    """The query filters on the stage contract. A reduce step: it keeps state across
    batches (the queries seen so far), so the runner feeds it every batch in order, in
    one process. Skips are counted by kind (``exact_duplicate``, ``near_duplicate``,
    ``contaminated``, ``harmful``); the reject rows keep the set or category."""

    name = "filter_queries"
    output = QueryRow

    def __init__(self, config: QueriesConfig, *, checker: HarmChecker | None = None, decontaminator: Decontaminator | None = None) -> None:
        self.filter = QueryFilter(config, checker=checker, decontaminator=decontaminator)

    def process(self, batch: Sequence[QueryRow]) -> StageBatch:
        out = StageBatch()
        kept, dropped = self.filter.filter(batch)
        for query in kept:
            out.keep(query)
        for query, reason in dropped:
            out.skip(reason.partition(":")[0], dropped_query(query, reason))
        return out
