"""The demo: the pipeline's parts that exist in this version, on the bundled examples.

The bundled examples (``fineinstructions/examples/``) were written for this package:
a few dozen queries, six short documents, a hand-made template bank and hand-written
instruction/answer pairs with excerpt markers. The demo reads them, validates the
templates, expands and grounds the answers, counts tokens with the embedded model's
tokenizer and packs the kept pairs into a dataset, writing every step's counts to
``stats.json`` and every rejection, with its reason, to ``rejects.jsonl``.
The LLM stages (templatize, match, instantiate, judge) are not in this version; the
hand-made templates and pairs stand where their outputs will.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Callable

from fineinstructions.config import Config
from fineinstructions.excerpt import SearchableDocument, expand_excerpts
from fineinstructions.io import ReadStats, ShardWriter, read_documents, read_queries, write_json
from fineinstructions.io.writers import atomic_write, prepare_output_dir
from fineinstructions.records import PairRow
from fineinstructions.stages.pack import pack_stage
from fineinstructions.template import parse_template, validate_template
from fineinstructions.tokens import load_token_counter


def examples_dir() -> Path:
    return Path(str(resources.files("fineinstructions") / "examples"))


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_demo(out_dir: str | Path, config: Config, log: Callable[[str], None] = print) -> dict:
    """Run the demo into ``out_dir``; returns the stats it also writes to ``stats.json``."""
    examples = examples_dir()
    out = Path(out_dir)
    prepare_output_dir(out / "dataset", overwrite=True)
    rejects: list[dict] = []

    query_stats = ReadStats()
    queries = list(read_queries([examples / "queries.jsonl"], stats=query_stats))
    log(f"queries: {len(queries)} read from {examples / 'queries.jsonl'}")

    templates, complexity = {}, Counter()
    for row in _jsonl(examples / "templates.jsonl"):
        problems = validate_template(row["template"])
        if problems:
            rejects.append({"stage": "templates", "id": row["id"], "reasons": problems, "row": row})
            continue
        parsed = parse_template(row["template"])
        templates[row["id"]] = row
        complexity[parsed.complexity] += 1
    invalid_templates = len(rejects)  # only templates have been rejected so far
    log(f"templates: {len(templates)} valid, {invalid_templates} rejected")

    document_stats = ReadStats()
    documents = list(read_documents([examples / "documents.jsonl"], stats=document_stats))
    searchable = {d.id: SearchableDocument(d.text) for d in documents}
    log(f"documents: {len(documents)} read")

    pairs, failed = [], Counter()
    raw_pairs = _jsonl(examples / "pairs.jsonl")
    minimum = config.instantiate.min_excerpt_ratio
    for row in raw_pairs:
        expansion = expand_excerpts(row["answer"], searchable[row["document_id"]])
        reasons = [f"{error.kind}_marker" for error in expansion.errors]
        if not reasons and expansion.excerpt_ratio < minimum:
            reasons.append("low_excerpt_ratio")
        if reasons:
            failed.update(set(reasons))
            rejects.append(
                {
                    "stage": "grounding",
                    "reasons": reasons,
                    "excerpt_ratio": round(expansion.excerpt_ratio, 3),
                    "errors": [error.message for error in expansion.errors],
                    "row": row,
                }
            )
            continue
        template = templates[row["template_id"]]
        pairs.append(
            PairRow(
                id=PairRow.make_id(row["document_id"], row["template_id"]),
                document_id=row["document_id"],
                template_id=row["template_id"],
                query_id=template["query_id"],
                instruction=row["instruction"],
                answer=expansion.text,
                excerpt_ratio=expansion.excerpt_ratio,
                excerpt_spans=tuple(span for span in expansion.spans if span is not None),
            )
        )
    log(
        f"pairs: {len(pairs)} of {len(raw_pairs)} grounded "
        f"(excerpt ratio >= {minimum}, every marker resolved); rejected: {dict(failed) or 'none'}"
    )

    counter = load_token_counter(config.pack.tokenizer)
    result, pack_stats = pack_stage(documents, pairs, counter=counter, seed=config.pack.seed)
    with ShardWriter(out / "dataset", PairRow, format=config.output.format) as writer:
        writer.write(result.kept)
    log(
        f"pack: kept {len(result.kept)} pairs, {result.kept_tokens} of {result.budget_tokens} "
        f"document tokens ({counter.name} tokenizer)"
    )

    stats = {
        "queries": query_stats.as_dict(),
        "templates": {
            "in": len(templates) + invalid_templates,
            "out": len(templates),
            "failed": {"invalid_template": invalid_templates},
            "complexity_histogram": {str(k): v for k, v in sorted(complexity.items())},
        },
        "documents": document_stats.as_dict(),
        "grounding": {"in": len(raw_pairs), "out": len(pairs), "failed": dict(failed)},
        "pack": pack_stats,
    }
    write_json(stats, out / "stats.json")
    atomic_write(
        out / "rejects.jsonl",
        lambda tmp: tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects), encoding="utf-8"
        ),
    )
    log(f"wrote {out / 'dataset'}, {out / 'stats.json'} and {out / 'rejects.jsonl'}")
    return stats
