"""Packing: keep a document's pairs while they fit the source corpus's own token budget.

The synthetic corpus should hold as many tokens as the corpus it came from, so that a
model trained on it can be compared token for token with one trained on the source.
Documents are taken in order; each adds its token count to the budget. Its candidate
pairs are visited in a seeded random order, and a pair is kept when the running total of
kept tokens, with it, stays within the running budget; a pair that does not fit is
dropped and the next one is tried. Budget left unused carries over to later documents.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Protocol, TypeVar

PAIR_FORMAT = "Instruction: {instruction}\n\nAnswer: {answer}"


def format_pair(instruction: str, answer: str) -> str:
    """The training text of a pair: ``Instruction: …\\n\\nAnswer: …``."""
    return PAIR_FORMAT.format(instruction=instruction, answer=answer)


class Budgeted(Protocol):
    """A document: an id and its token count."""

    @property
    def id(self) -> str: ...

    @property
    def token_count(self) -> int | None: ...


class Candidate(Protocol):
    """A candidate pair: its id, its document's id and its token count (formatting included)."""

    @property
    def id(self) -> str: ...

    @property
    def document_id(self) -> str: ...

    @property
    def token_count(self) -> int | None: ...


P = TypeVar("P", bound=Candidate)


@dataclass(frozen=True, slots=True)
class PackResult:
    """The kept pairs (documents in input order, each document's pairs in their drawn
    order) and the token accounting: ``budget_tokens`` is the carried-in budget plus
    every document's tokens, ``carry_over`` what is left of it."""

    kept: list = field(default_factory=list)
    budget_tokens: int = 0
    kept_tokens: int = 0
    dropped: int = 0

    @property
    def carry_over(self) -> int:
        return self.budget_tokens - self.kept_tokens


def pack_pairs(
    documents: Iterable[Budgeted],
    pairs: Iterable[P],
    *,
    seed: int = 0,
    carry_in: int = 0,
) -> PackResult:
    """Keep pairs under the running token budget of ``documents`` (see the module doc).

    Every pair's ``document_id`` must be one of ``documents``, and every document and
    pair needs a ``token_count``. ``carry_in`` is budget left over from earlier batches.
    The draw for a document depends only on ``seed`` and the document's id, not on the
    order the pairs arrive in.
    """
    by_document: dict[str, list[P]] = defaultdict(list)
    for pair in pairs:
        _require_count(pair, "pair")
        by_document[pair.document_id].append(pair)

    kept: list[P] = []
    budget, used, dropped = carry_in, 0, 0
    for document in documents:
        budget += _require_count(document, "document")
        candidates = sorted(by_document.pop(document.id, ()), key=lambda p: p.id)
        random.Random(f"{seed}\x1f{document.id}").shuffle(candidates)
        for pair in candidates:
            if used + pair.token_count <= budget:
                kept.append(pair)
                used += pair.token_count
            else:
                dropped += 1
    if by_document:
        unknown = sorted(by_document)[:5]
        raise ValueError(
            f"{sum(map(len, by_document.values()))} pair(s) belong to documents that were "
            f"not given, e.g. {unknown}; pass every document the pairs were made from"
        )
    return PackResult(
        kept=kept, budget_tokens=budget, kept_tokens=used, dropped=dropped
    )


def _require_count(item: Budgeted | Candidate, kind: str) -> int:
    count = item.token_count
    if count is None or count < 0:
        raise ValueError(
            f"{kind} {item.id!r} has no valid token_count ({count!r}); count tokens first"
        )
    return count
