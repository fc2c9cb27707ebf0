"""Match: documents → compatible templates (DESIGN §2.3).

Each document is embedded once; Gaussian pooling turns its token embeddings into
``K + 1`` vectors (the global mean and ``K`` local ones). Every vector searches the
template index; the templates it finds with cosine at or above the threshold are its
candidates. From each vector's candidates one template is chosen, never one the document
already has, so a document gets up to ``K + 1`` templates:

1. the complexities (variable counts) present among the candidates are weighted by the
   target distribution, renormalised over those present, and one is drawn;
2. one candidate of that complexity is drawn uniformly.

When every complexity is available this draws complexities exactly by the target;
otherwise it comes as close as the candidates allow (the stats give the achieved
distribution beside the target). Draws are seeded per document (by ``seed`` and the
document id) and run over the candidates in template-id order, so the result does not
depend on batching, order, sharding or the bank's row order, nor on float noise in the
scores (which differ in the last digits between CPUs, thread counts and batches); only a
score within that noise of the threshold can fall on either side of it.

A vector with no candidate above the threshold contributes nothing; it is counted.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fineinstructions.errors import UserError
from fineinstructions.models.embedder import MODEL_SETTINGS, Embedder, normalize
from fineinstructions.models.index import TemplateIndex, require_same_embedder
from fineinstructions.models.pooling import gaussian_pool
from fineinstructions.records import DocumentRow, MatchRow
from fineinstructions.stages.base import Stage, StageBatch

STAGE = "match"

# Cosine thresholds per embedder (the model an embedder identity resolves to).
# - The paper's fine-tuned retriever: 0.865, hand-tuned by its authors.
# - all-MiniLM-L6-v2 (the embedded default): calibrated on ../shared/data, see
#   benchmarks/calibrate_threshold.py and docs/matching.md.
CALIBRATED_THRESHOLDS: dict[str, float] = {
    "fineinstructions/instruction_template_retrieval_embedding": 0.865,
    "sentence-transformers/all-MiniLM-L6-v2": 0.45,
}


def calibrated_threshold(model: str) -> float:
    """The threshold stored with a trained embedder (``train retriever``, ``calibrate
    --write``), the shipped one for a known embedder, or a clear error saying to pass one."""
    stored = Path(model) / MODEL_SETTINGS
    if stored.is_file():
        threshold = json.loads(stored.read_text(encoding="utf-8")).get("match_threshold")
        if isinstance(threshold, (int, float)):
            return float(threshold)
    try:
        return CALIBRATED_THRESHOLDS[model]
    except KeyError:
        known = ", ".join(f"{name} ({value})" for name, value in CALIBRATED_THRESHOLDS.items())
        raise UserError(
            f"there is no calibrated match threshold for the embedder {model!r} (known: {known}).\n"
            "  fix: pass --threshold COSINE (or --set match.threshold=COSINE); "
            "`fineinstructions calibrate --labels ... --write` stores one with a model folder"
        ) from None


def document_rng(seed: int, document_id: str) -> np.random.Generator:
    digest = hashlib.sha256(document_id.encode("utf-8")).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])


def complexity_distribution(counts: Mapping[int, float]) -> dict[int, float]:
    """Normalise weights per complexity to probabilities (zero and negative dropped)."""
    positive = {int(c): float(w) for c, w in counts.items() if float(w) > 0}
    total = sum(positive.values())
    if not total:
        raise UserError("the target complexity distribution gives no complexity a positive weight")
    return {c: w / total for c, w in sorted(positive.items())}


def choose(
    positions: np.ndarray,
    complexities: np.ndarray,
    target: Mapping[int, float],
    rng: np.random.Generator,
) -> int | None:
    """Index into ``positions`` of the chosen candidate (see the module docstring), or
    None when the target gives no weight to any candidate's complexity."""
    levels = sorted(set(int(c) for c in complexities))
    weights = np.array([target.get(level, 0.0) for level in levels])
    if not weights.sum() > 0:
        return None
    level = levels[int(rng.choice(len(levels), p=weights / weights.sum()))]
    same = np.flatnonzero(complexities == level)
    return int(same[rng.integers(len(same))])


@dataclass
class MatchResult:
    rows: list[MatchRow]
    documents: int = 0
    vectors: int = 0
    no_candidate: int = 0  # nothing at or above the threshold
    all_taken: int = 0  # candidates, but each already chosen by another vector of the document
    off_target: int = 0  # candidates, but none of a complexity the target wants
    matched_documents: int = 0
    text_tokens: int = 0
    tokens_seen: int = 0
    truncated_documents: int = 0
    chosen_complexity: Counter = field(default_factory=Counter)
    best_scores: list = field(default_factory=list)  # each document's best cosine over its vectors

    @property
    def vectors_without_match(self) -> int:
        return self.no_candidate + self.all_taken + self.off_target


class Matcher:
    """Finds templates for batches of documents. Holds the embedder and the index;
    does no file I/O."""

    def __init__(
        self,
        embedder: Embedder,
        index: TemplateIndex,
        *,
        threshold: float | None = None,
        num_chunks: int = 5,
        sigma: float = 0.05,
        alpha: float = 1.0,
        candidates: int = 64,
        target: Mapping[int, float] | None = None,
        seed: int = 0,
    ) -> None:
        require_same_embedder(index.identity, embedder.identity)
        self.embedder = embedder
        self.index = index
        self.threshold = calibrated_threshold(embedder.identity.model) if threshold is None else float(threshold)
        self.num_chunks = num_chunks
        self.sigma = sigma
        self.alpha = alpha
        self.candidates = candidates
        bank = Counter(int(c) for c in index.complexity)
        self.target = complexity_distribution(target if target is not None else bank)
        self.seed = seed

    def document_vectors(self, documents: Sequence[DocumentRow]) -> tuple[np.ndarray, list]:
        """``(n, K + 1, d)`` L2-normalised pooled vectors, and each document's token counts."""
        embedded = self.embedder.token_embeddings([d.text for d in documents])
        pooled = np.stack(
            [
                gaussian_pool(
                    item.vectors,
                    np.ones(len(item.vectors), dtype=np.int64),
                    num_chunks=self.num_chunks,
                    sigma=self.sigma,
                    alpha=self.alpha,
                )
                for item in embedded
            ]
        )
        return normalize(pooled).astype(np.float32), embedded

    def __call__(self, documents: Sequence[DocumentRow]) -> MatchResult:
        result = MatchResult(rows=[])
        if not documents:
            return result
        vectors, embedded = self.document_vectors(documents)
        per_doc = vectors.shape[1]
        scores, positions = self.index.search(vectors.reshape(-1, vectors.shape[2]), self.candidates)
        complexity = self.index.complexity
        for d, document in enumerate(documents):
            item = embedded[d]
            result.documents += 1
            result.text_tokens += item.text_tokens
            result.tokens_seen += item.tokens_seen
            result.truncated_documents += item.truncated
            best = scores[d * per_doc : (d + 1) * per_doc]
            valid = best[positions[d * per_doc : (d + 1) * per_doc] >= 0]
            result.best_scores.append(float(valid.max()) if valid.size else None)
            rng = document_rng(self.seed, document.id)
            chosen: set[int] = set()
            for chunk in range(per_doc):
                result.vectors += 1
                row_scores = scores[d * per_doc + chunk]
                row_positions = positions[d * per_doc + chunk]
                above = (row_positions >= 0) & (row_scores >= self.threshold)
                if not above.any():
                    result.no_candidate += 1
                    continue
                free = above & ~np.isin(row_positions, list(chosen))
                if not free.any():
                    result.all_taken += 1
                    continue
                # The draw runs over the candidates in template-id order, not score order:
                # two close scores can swap with float noise (another CPU, thread count or
                # batch), an id never does; nor does it move with the bank's row order.
                candidates, candidate_scores = row_positions[free], row_scores[free]
                by_id = sorted(range(len(candidates)), key=lambda i: str(self.index.ids[candidates[i]]))
                candidates, candidate_scores = candidates[by_id], candidate_scores[by_id]
                pick = choose(candidates, complexity[candidates], self.target, rng)
                if pick is None:
                    result.off_target += 1
                    continue
                position = int(candidates[pick])
                chosen.add(position)
                result.chosen_complexity[int(complexity[position])] += 1
                result.rows.append(
                    MatchRow(
                        document_id=document.id,
                        template_id=str(self.index.ids[position]),
                        chunk=chunk,
                        score=float(candidate_scores[pick]),
                        **self.index.template_details(position),
                    )
                )
            result.matched_documents += bool(chosen)
        return result


class MatchStage(Stage):
    """Documents → their matched templates; each worker loads the embedder and the
    index once. ``target`` is the complexity distribution (None: the bank's own)."""

    name = "match"
    version = "3"  # 2: match rows carry their template's text, variables and query;
    # 3: the draw runs over candidates in template-id order
    output = MatchRow

    def __init__(self, config: Any, index_dir: str, *, target: Mapping[int, float] | None = None, embedder: Any = None) -> None:
        self.config = config
        self.index_dir = str(index_dir)
        self.target = target
        self.ready = embedder
        self.matcher: Matcher | None = None
        self.batch_size = config.match.batch_size

    def __getstate__(self) -> dict:
        return {**self.__dict__, "ready": None, "matcher": None}

    def settings(self) -> dict[str, Any]:
        from fineinstructions.config import output_fingerprint

        return {"match": output_fingerprint(self.config.match), "embed": output_fingerprint(self.config.embed),
                "target": {str(k): v for k, v in (self.target or {}).items()}}

    def open(self, worker: Any) -> None:
        from fineinstructions.models.index import TemplateIndex

        embedder = self.ready
        if embedder is None:
            from fineinstructions.models.embedder import make_embedder

            embedder = make_embedder(self.config.embed)
        index = TemplateIndex.load(self.index_dir, embedder=embedder.identity, nprobe=self.config.index.nprobe)
        section, embed = self.config.match, self.config.embed
        self.matcher = Matcher(
            embedder, index, threshold=section.threshold, num_chunks=embed.num_chunks, sigma=embed.sigma,
            alpha=embed.alpha, candidates=section.candidates, target=self.target, seed=section.seed,
        )

    def close(self) -> None:
        self.matcher = None

    def info(self) -> dict[str, Any]:
        return {"threshold": self.matcher.threshold} if self.matcher is not None else {}

    def process(self, batch: Sequence[DocumentRow]) -> StageBatch:
        assert self.matcher is not None, "open() the stage first"
        tick = time.monotonic()
        result = self.matcher(batch)
        out = StageBatch()
        by_document: dict[str, list[MatchRow]] = {}
        for row in result.rows:
            by_document.setdefault(row.document_id, []).append(row)
        for document in batch:
            rows = by_document.get(document.id)
            if rows:
                out.keep(*rows)
            else:
                out.skip("no_match")
            out.add(**{f"matches_per_document:{len(rows or ())}": 1})
        out.add(
            matches=len(result.rows), vectors=result.vectors, no_candidate=result.no_candidate,
            all_taken=result.all_taken, off_target=result.off_target, text_tokens=result.text_tokens,
            tokens_seen=result.tokens_seen, truncated_documents=result.truncated_documents,
            model_seconds=round(time.monotonic() - tick, 3),
        )
        out.add(**{f"complexity:{k}": v for k, v in result.chosen_complexity.items()})
        for score in result.best_scores:  # a histogram, in steps of 0.05
            if score is not None:
                out.add(**{f"best_score:{math.floor(score * 20) / 20:.2f}": 1})
        return out
