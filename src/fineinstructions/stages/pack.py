"""The pack stage: format pairs, count tokens, keep what fits each document's budget."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from fineinstructions.pack import PackResult, format_pair, pack_pairs
from fineinstructions.records import DocumentRow, PairRow
from fineinstructions.tokens import TokenCounter


def with_token_counts(documents: Sequence[DocumentRow], counter: TokenCounter) -> list[DocumentRow]:
    """Documents with ``token_count`` set (counted only where it is missing)."""
    missing = [d for d in documents if d.token_count is None]
    counts = iter(counter.count([d.text for d in missing]))
    return [
        d if d.token_count is not None else dataclasses.replace(d, token_count=next(counts))
        for d in documents
    ]


def formatted(pairs: Sequence[PairRow], counter: TokenCounter) -> list[PairRow]:
    """Pairs with their training ``text`` and its ``token_count``."""
    texts = [format_pair(p.instruction, p.answer) for p in pairs]
    counts = counter.count(texts)
    return [
        dataclasses.replace(p, text=text, token_count=count)
        for p, text, count in zip(pairs, texts, counts, strict=True)
    ]


def pack_stage(
    documents: Sequence[DocumentRow],
    pairs: Sequence[PairRow],
    *,
    counter: TokenCounter,
    seed: int = 0,
    carry_in: int = 0,
) -> tuple[PackResult, dict]:
    """Format, count and pack; returns the result and the stage's counts.

    Counts follow the rule every stage keeps: ``in = out + sum(skipped)``.
    """
    result = pack_pairs(
        with_token_counts(documents, counter), formatted(pairs, counter), seed=seed, carry_in=carry_in
    )
    stats = {
        "in": len(pairs),
        "out": len(result.kept),
        "skipped": {"over_budget": result.dropped} if result.dropped else {},
        "failed": {},
        "documents": len(documents),
        "budget_tokens": result.budget_tokens,
        "kept_tokens": result.kept_tokens,
        "carry_over_tokens": result.carry_over,
        "tokenizer": counter.name,
    }
    return result, stats
