"""The pack stage: format pairs, count tokens, keep what fits each document's budget."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

from fineinstructions.models.tokens import TokenCounter
from fineinstructions.records import DocumentRow, PairRow
from fineinstructions.stages.base import Stage, StageBatch
from fineinstructions.text.packing import PackResult, format_pair, pack_pairs


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
) -> PackResult:
    """Format the pairs, count the tokens of pairs and documents, and pack."""
    return pack_pairs(with_token_counts(documents, counter), formatted(pairs, counter), seed=seed, carry_in=carry_in)


class PackStage(Stage):
    """(document, its judged pairs) of one shard → the pairs that fit the shard's budget.

    A shard is one batch (``batch_size`` is unbounded): the budget carries over from
    document to document within the shard, in the shard's document order, and not from
    one shard to the next, so shards can be packed in any order and on any worker."""

    name = "pack"
    version = "1"
    output = PairRow
    batch_size = sys.maxsize

    def __init__(self, config: Any) -> None:
        self.config = config
        self.counter: TokenCounter | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "counter": None}

    def settings(self) -> dict[str, Any]:
        from fineinstructions.config import output_fingerprint

        return output_fingerprint(self.config.pack)

    def open(self, worker: Any) -> None:
        from fineinstructions.models.tokens import load_token_counter

        self.counter = load_token_counter(self.config.pack.tokenizer)

    def close(self) -> None:
        self.counter = None

    def process(self, batch: Sequence[tuple[DocumentRow, list[PairRow]]]) -> StageBatch:
        assert self.counter is not None, "open() the stage first"
        documents = [document for document, _ in batch]
        pairs = [pair for _, pairs in batch for pair in pairs]
        result = pack_stage(documents, pairs, counter=self.counter, seed=self.config.pack.seed)
        out = StageBatch()
        for pair in result.kept:
            out.keep(pair)
            out.add(excerpt_ratio_sum=pair.excerpt_ratio, cut_documents=int(pair.document_chars is not None))
            for role, model, version in (
                ("instantiate", pair.instantiate_model, pair.instantiate_prompt_version),
                ("judge", pair.judge_model, pair.judge_prompt_version),
            ):
                out.add(**{f"made_by:{role}:{model}|{version}": 1})
        for _ in range(result.dropped):
            out.skip("over_budget")
        out.add(
            documents=len(documents), budget_tokens=result.budget_tokens, kept_tokens=result.kept_tokens,
            carry_over_tokens=result.carry_over,
        )
        return out
