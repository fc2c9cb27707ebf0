"""``fineinstructions audit``: an independent re-check of a finished dataset.

It reads the dataset's rows and the source documents, nothing else the pipeline left,
and re-derives every figure (:mod:`.audit_rules`). Hard rules fail the audit (exit
status 1): a span that is not the document's text, a wrong excerpt ratio, leftover
markup, a malformed training text, a score below the kept minimum, a repeated id. Soft
rules are measured and their worst cases shown: instruction–answer relevance under the
configured embedder, template diversity against the paper's figures, n-gram overlap of
the outputs with protected evaluation sets, personal data, and near-duplicate pairs.

Memory: the texts of the documents the dataset uses, 8 bytes per pair for the id check,
a count per distinct template, and the near-duplicate check's signatures (about 3 KB a
pair); the pairs themselves are read one shard at a time.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.experiments import audit_rules as rules
from fineinstructions.experiments.export import dataset_shards
from fineinstructions.io import read_documents, read_rows, write_json
from fineinstructions.records import PairRow

HARD = ("spans", "excerpt_ratio", "markup", "format", "judge_score", "ids")
SOFT = ("relevance", "diversity", "contamination", "personal_data", "near_duplicates")
# The paper's diversity figures (DESIGN §2.7).
PAPER_MAX_TEMPLATE_SHARE = 0.0009
PAPER_DISTINCT_TEMPLATES = (16891, 0.24)  # distinct templates ≈ 16891 · documents^0.24
N_GRAM = 13


@dataclass
class Rule:
    """One rule's outcome: pairs checked, pairs that broke it, the first examples."""

    name: str
    hard: bool
    checked: int = 0
    failed: int = 0
    examples: list[dict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def record(self, problem: str | None, pair: PairRow, keep: int, **extra: Any) -> None:
        self.checked += 1
        if problem is not None:
            self.failed += 1
            if len(self.examples) < keep:
                self.examples.append(rules.example(pair, problem, **extra))

    def as_dict(self) -> dict[str, Any]:
        return {"hard": self.hard, "checked": self.checked, "failed": self.failed, "passed": not self.failed,
                **self.figures, "examples": self.examples}


@dataclass
class AuditSettings:
    min_excerpt_ratio: float
    min_score: float
    score: str
    min_relevance: float | None
    near_threshold: float = 0.8
    examples: int = 5
    region: str | None = "US"
    relevance: bool = True

    @classmethod
    def from_config(cls, config: Config, **given: Any) -> "AuditSettings":
        values = {
            "min_excerpt_ratio": config.instantiate.min_excerpt_ratio, "min_score": float(config.judge.min_score),
            "score": config.judge.score, "min_relevance": config.judge.min_relevance,
        }
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)


def _documents(paths: Sequence[str | Path], wanted: set[str]) -> tuple[dict[str, str], int]:
    """The texts of the ``wanted`` documents, and how many documents ``paths`` hold."""
    texts: dict[str, str] = {}
    count = 0
    for document in read_documents(paths):
        count += 1
        if document.id in wanted and document.id not in texts:
            texts[document.id] = document.text
    return texts, count


def run_audit(
    dataset: str | Path,
    document_paths: Sequence[str | Path],
    config: Config,
    *,
    protected: Iterable[str | Path] = (),
    output: str | Path | None = None,
    embedder: Any = None,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> dict:
    """Audit the dataset folder ``dataset`` against its source documents; write the
    result to ``output`` (default ``DATASET/audit.json``) and return it."""
    from fineinstructions.experiments.eval_sets import read_eval_set
    from fineinstructions.stages.decontaminate import Decontaminator
    from fineinstructions.stages.dedup import Deduplicator

    started = time.monotonic()
    folder = Path(dataset)
    files = dataset_shards(folder)
    setup = AuditSettings.from_config(config, **settings)
    found = {name: Rule(name, name in HARD) for name in (*HARD, *SOFT)}
    wanted = {pair.document_id for pair in read_rows(files, PairRow)}
    documents, document_count = _documents(document_paths, wanted)
    log(f"audit: {len(files)} shard(s), {len(documents)} of {len(wanted)} source documents found in {document_count}")

    guard = Decontaminator(N_GRAM)
    for path in protected:
        for item in read_eval_set(path):
            for text in (*item.turns, *(item.references or ())):
                guard.add(item.set_name, text)
    near = Deduplicator(exact=True, near_threshold=setup.near_threshold)
    ids: list[int] = []
    templates: Counter = Counter()
    relevance: list[float] = []
    personal: Counter = Counter()
    pairs = 0
    scorer = _Relevance(embedder, config) if setup.relevance else None
    for path in files:
        shard = list(read_rows([path], PairRow))
        pairs += len(shard)
        for pair in shard:
            document = documents.get(pair.document_id)
            found["spans"].record(rules.check_spans(pair, document), pair, setup.examples)
            found["excerpt_ratio"].record(rules.check_ratio(pair, setup.min_excerpt_ratio), pair, setup.examples)
            found["markup"].record(rules.check_markup(pair), pair, setup.examples)
            found["format"].record(rules.check_format(pair), pair, setup.examples)
            found["judge_score"].record(rules.check_score(pair, setup.min_score, setup.score), pair, setup.examples)
            ids.append(hash(pair.id) & 0xFFFFFFFFFFFFFFFF)
            templates[pair.template_id] += 1
            hit = guard.check(pair.instruction) or guard.check(pair.answer)
            found["contamination"].record(f"shares a {N_GRAM}-gram with {hit!r}" if hit else None, pair, setup.examples)
            kinds = Counter(kind for text in (pair.instruction, pair.answer) for kind, _ in rules.personal_data(text, setup.region))
            personal.update(kinds)
            found["personal_data"].record(", ".join(f"{k} ×{n}" for k, n in kinds.items()) or None, pair, setup.examples)
            verdict = near.check(f"{pair.instruction}\n{pair.answer}")
            found["near_duplicates"].record(f"{verdict} of an earlier pair" if verdict else None, pair, setup.examples)
        if scorer is not None:
            for pair, score in zip(shard, scorer(shard), strict=True):
                relevance.append(score)
                low = setup.min_relevance is not None and score < setup.min_relevance
                found["relevance"].record(f"relevance {score:.3f} < {setup.min_relevance}" if low else None, pair,
                                          setup.examples, relevance=round(score, 4))
    _ids(found["ids"], ids, pairs)
    _diversity(found["diversity"], templates, pairs, document_count)
    found["contamination"].figures["protected_sets"] = dict(guard.sets)
    found["personal_data"].figures["found"] = dict(personal)
    if relevance:
        values = np.asarray(relevance)
        found["relevance"].figures.update(
            {"min_relevance": setup.min_relevance, "embedder": scorer.model if scorer else None,
             "quantiles": {q: round(float(np.quantile(values, q / 100)), 4) for q in (5, 25, 50, 75, 95)}}
        )
        found["relevance"].examples.sort(key=lambda e: e["relevance"])
    failed_hard = [name for name in HARD if found[name].failed]
    result = {
        "dataset": str(folder.resolve()),
        "pairs": pairs,
        "documents": document_count,
        "passed": not failed_hard,
        "failed_hard_rules": failed_hard,
        "settings": setup.__dict__,
        "rules": {name: rule.as_dict() for name, rule in found.items()},
        "seconds": round(time.monotonic() - started, 2),
    }
    write_json(result, Path(output) if output else folder / "audit.json")
    return result


def _ids(rule: Rule, hashes: list[int], pairs: int) -> None:
    values = np.asarray(hashes, dtype=np.uint64)
    repeated = int(len(values) - len(np.unique(values)))
    rule.checked, rule.failed = pairs, repeated
    if repeated:
        rule.examples.append({"detail": f"{repeated} pair id(s) repeat an earlier one"})


def _diversity(rule: Rule, templates: Counter, pairs: int, documents: int) -> None:
    """Distinct templates and the largest share of pairs one template has, beside the
    paper's figures; measured, never failed (a small run cannot reach the paper's)."""
    rule.checked = pairs
    top = templates.most_common(3)
    a, b = PAPER_DISTINCT_TEMPLATES
    rule.figures.update({
        "distinct_templates": len(templates),
        "largest_template_share": round(top[0][1] / pairs, 6) if pairs else None,
        "paper_largest_template_share": PAPER_MAX_TEMPLATE_SHARE,
        "paper_distinct_templates_for_these_documents": round(a * documents**b) if documents else None,
        "most_used_templates": [{"template_id": t, "pairs": n} for t, n in top],
    })


class _Relevance:
    """Cosine of instruction and answer under the configured embedder (as instantiate's
    relevance scorer computes it)."""

    def __init__(self, embedder: Any, config: Config) -> None:
        if embedder is None:
            from fineinstructions.models.embedder import make_embedder

            embedder = make_embedder(config.embed)
        self.embedder = embedder
        self.model = getattr(getattr(embedder, "identity", None), "model", None)

    def __call__(self, pairs: Sequence[PairRow]) -> list[float]:
        if not pairs:
            return []
        vectors = np.asarray(self.embedder.embed([p.instruction for p in pairs] + [p.answer for p in pairs]))
        n = len(pairs)
        return [float(x) for x in np.einsum("ij,ij->i", vectors[:n], vectors[n:])]
