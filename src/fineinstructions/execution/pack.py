"""Run the pack stage: judged pairs + documents → the final dataset, with its card.

Documents are counted with the configured tokenizer and give the token budget; the
judged pairs are formatted, counted and kept while they fit (:mod:`fineinstructions.text.packing`),
the budget carrying over from document to document within each shard.
The dataset folder holds the rows (sharded Parquet or JSONL), ``stats.json`` and a
dataset card, ``README.md``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from fineinstructions import __version__
from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.io import write_json
from fineinstructions.io.writers import atomic_write
from fineinstructions.records import PairRow
from fineinstructions.text.packing import PAIR_FORMAT


def run_pack(
    pair_paths: Sequence[str | Path],
    document_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    executor=None,
    show_progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Pack the pairs; returns the stats also written to ``output/stats.json``.

    Shard *i* of the dataset is judged shard *i* packed under the budget of the document
    piece it came from (judged pairs not written by ``judge`` are joined with the
    documents piece by piece)."""
    from fineinstructions.execution.instantiate import joined_plan
    from fineinstructions.execution.runner import document_read, read_stats, resolved, run_stage
    from fineinstructions.stages.base import outcomes
    from fineinstructions.stages.pack import PackStage

    for path in map(Path, pair_paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
    out = Path(output)
    read = document_read(config)
    run = run_stage(
        PackStage(config),
        joined_plan(pair_paths, document_paths, PairRow, config.instantiate.shard_size, work=out / ".work" / "ids",
                    read=read, executor=executor, log=log),
        out,
        inputs={"pairs": [resolved(p) for p in pair_paths], "documents": [resolved(p) for p in document_paths]},
        read=read,
        format=config.output.format,
        overwrite=overwrite,
        executor=executor,
        show_progress=show_progress,
        unit="documents",
        log=log,
    )
    c = run.counts
    _check_every_pair_joined(pair_paths, document_paths, c.get("read:joined", 0), config)
    documents = c.get("documents", 0)
    stats = {
        **outcomes(c),
        "documents": documents,
        "budget_tokens": c.get("budget_tokens", 0),
        "kept_tokens": c.get("kept_tokens", 0),
        "carry_over_tokens": c.get("carry_over_tokens", 0),
        "tokenizer": config.pack.tokenizer,
        "shards": len(run.markers),
        "seconds": round(run.wall_seconds, 2),
        "pairs_per_document": round(c.get("out", 0) / documents, 4) if documents else None,
    }
    made_by: dict[str, Counter] = {"instantiate": Counter(), "judge": Counter()}
    for key, value in c.items():
        if key.startswith("made_by:"):
            role, _, what = key[len("made_by:"):].partition(":")
            made_by[role][what] += value
    card = {
        "excerpt_ratio": c.get("excerpt_ratio_sum", 0.0) / c["out"] if c.get("out") else 0.0,
        "cut": c.get("cut_documents", 0),
        "made_by": made_by,
    }
    write_dataset_card(out, stats, card)
    full = {"read_documents": read_stats(run), "pack": stats}
    write_json(full, out / "stats.json")
    log(
        f"pack: kept {stats['out']} of {stats['in']} pairs from {documents} documents "
        f"({stats['kept_tokens']} of {stats['budget_tokens']} budget tokens, {config.pack.tokenizer} tokenizer)"
    )
    return full


def _check_every_pair_joined(pair_paths, document_paths, joined: int, config: Config) -> None:
    """Pairs whose document is not among the documents would silently drop out: refuse."""
    import pyarrow.parquet as pq

    from fineinstructions.execution.ledger import data_files
    from fineinstructions.io import read_documents, read_rows

    files = data_files(pair_paths)
    total = sum(
        pq.ParquetFile(f).metadata.num_rows if f.suffix == ".parquet" else sum(1 for _ in read_rows([f], PairRow))
        for f in files
    )
    if joined >= total:
        return
    known = {d.id for d in read_documents(document_paths, on_error="skip")}  # an error path only
    missing = sorted({p.document_id for p in read_rows(files, PairRow)} - known)
    raise UserError(
        f"{total - joined} pair(s) belong to documents that were not given, e.g. {missing[:5]}.\n"
        "  fix: pass with --documents every document the pairs were made from"
    )


def _values(made: Counter, part: int) -> str:
    found: Counter = Counter()
    for key, count in made.items():
        value = key.split("|")[part]
        if value and value != "None":
            found[value] += count
    return ", ".join(f"`{value}` ({count})" for value, count in found.most_common()) or "none"


def write_dataset_card(out: Path, stats: dict, card: dict) -> Path:
    """``README.md`` beside the data: what the rows are, how they were made, their columns."""
    ratio, cut, made_by = card["excerpt_ratio"], card["cut"], card["made_by"]
    documents, pairs = stats["documents"], stats["out"]
    shown_format = PAIR_FORMAT.replace("\n", "\\n")
    card = f"""---
pretty_name: FineInstructions synthetic instruction data
tags:
- synthetic
- instruction-tuning
- pre-training
---

# Grounded instruction → answer pairs

Made with fineinstructions {__version__} (the FineInstructions method, arXiv 2601.22146):
real user queries were turned into instruction templates, each document was matched to
compatible templates, an LLM instantiated each (template, document) pair into an
instruction and an answer quoted mostly verbatim from the document, a judge scored each
pair from 1 to 5, and the pairs that scored high enough were packed under the
documents' own token budget.

## Contents

- **{pairs} pairs** from **{documents} documents** ({pairs / documents if documents else 0:.2f} per document)
- {stats['kept_tokens']} tokens of pairs within a budget of {stats['budget_tokens']} document tokens
  (tokenizer `{stats['tokenizer']}`)
- mean excerpt ratio {ratio:.3f}; {cut} pair(s) come from documents cut to fit the model's context

Models and prompt versions:

- instantiated by {_values(made_by["instantiate"], 0)} with prompt {_values(made_by["instantiate"], 1)}
- judged by {_values(made_by["judge"], 0)} with prompt {_values(made_by["judge"], 1)}

## Format

Each row's `text` is the training string: `{shown_format}`.

| column | meaning |
| --- | --- |
| `id` | the pair's id (a hash of its document and template ids) |
| `document_id`, `template_id`, `query_id` | where it came from: the source document, the template, the user query the template was made from |
| `instruction`, `answer` | the pair; the answer's excerpts are the document's own text |
| `text` | the formatted training string |
| `excerpt_ratio` | the share of the answer's characters quoted from the document |
| `excerpt_spans` | `[start, end)` character offsets in the document of each excerpt |
| `judge_score` | the judge's 1–5 score |
| `token_count` | tokens of `text` |
| `instantiate_model`, `instantiate_prompt_version`, `judge_model`, `judge_prompt_version` | what made the pair |
| `document_chars` | set when the document was cut to fit the model's context: the characters the model saw |
"""
    return atomic_write(out / "README.md", lambda tmp: tmp.write_text(card, encoding="utf-8"))
