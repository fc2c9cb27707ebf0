"""Does the answer address the instruction? The embedder's opinion, for every pair.

A grounded answer is the document's own text by construction, but nothing in the
excerpt grammar makes it answer the instruction: a small instantiator happily quotes
"The last tip is the implementation of keywords." for "how are bicycle tire tubes
sized". The sentence embedder already loaded for matching sees that at a glance, for a
fraction of the cost of a judge call.

For each pair, :class:`RelevanceScorer` sets

- ``relevance``: the cosine similarity of the instruction and the answer;
- ``passage_relevance``: the cosine similarity of the instruction and the passage
  around the answer's excerpts (``context_chars`` either side, cut at word
  boundaries), which tells an answer that quotes the right place too briefly from one
  that quotes the wrong place.

The judge stage's relevance gate (``judge.min_relevance``) reads ``relevance``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from fineinstructions.records import PairRow


def passage(document: str, spans: Sequence[tuple[int, int]], context_chars: int = 300) -> str:
    """The text of ``document`` from ``context_chars`` before the first excerpt to as far
    after the last, widened to whole words (empty when there are no spans)."""
    if not spans:
        return ""
    start = max(0, min(s for s, _ in spans) - context_chars)
    end = min(len(document), max(e for _, e in spans) + context_chars)
    if start > 0:
        space = document.find(" ", start)
        start = space + 1 if 0 <= space < min(s for s, _ in spans) else start
    if end < len(document):
        space = document.rfind(" ", max(e for _, e in spans), end)
        end = space if space > 0 else end
    return document[start:end].strip()


class RelevanceScorer:
    """Scores pairs with a sentence embedder (anything with ``embed(texts) -> (n, d)``)."""

    def __init__(self, embedder: Any, *, context_chars: int = 300) -> None:
        self.embedder = embedder
        self.context_chars = context_chars

    def score_missing(self, pairs: Sequence[PairRow]) -> list[PairRow]:
        """``pairs`` with ``relevance`` set where it is missing (pairs made by another tool
        or an older run), from the instruction and the answer alone; the document is not
        at hand, so ``passage_relevance`` stays as it is."""
        missing = [i for i, pair in enumerate(pairs) if pair.relevance is None]
        if not missing:
            return list(pairs)
        texts = [text for i in missing for text in (pairs[i].instruction, pairs[i].answer)]
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = (vectors[0::2] * vectors[1::2]).sum(axis=1)
        out = list(pairs)
        for i, score in zip(missing, scores, strict=True):
            out[i] = dataclasses.replace(pairs[i], relevance=round(float(score), 4))
        return out

    def __call__(self, pairs: Sequence[PairRow], documents: Mapping[str, str]) -> list[PairRow]:
        """``pairs`` with ``relevance`` and ``passage_relevance`` set; ``documents`` maps
        each pair's document id to the text the instantiator saw."""
        if not pairs:
            return []
        texts: list[str] = []
        for pair in pairs:
            around = passage(documents[pair.document_id], pair.excerpt_spans, self.context_chars)
            texts += [pair.instruction, pair.answer, around or pair.answer]
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        instruction, answer, around = vectors[0::3], vectors[1::3], vectors[2::3]
        to_answer = (instruction * answer).sum(axis=1)
        to_passage = (instruction * around).sum(axis=1)
        return [
            dataclasses.replace(pair, relevance=round(float(a), 4), passage_relevance=round(float(p), 4))
            for pair, a, p in zip(pairs, to_answer, to_passage, strict=True)
        ]
