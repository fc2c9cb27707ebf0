"""Run the pack stage: judged pairs + documents → the final dataset, with its card.

Documents are counted with the configured tokenizer and give the token budget; the
judged pairs are formatted, counted and kept while they fit (:mod:`fineinstructions.pack`).
The dataset folder holds the rows (sharded Parquet or JSONL), ``stats.json`` and a
dataset card, ``README.md``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from fineinstructions import __version__
from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.ledger import data_files
from fineinstructions.io import ReadStats, ShardWriter, read_rows, write_json
from fineinstructions.io.writers import atomic_write, prepare_output_dir
from fineinstructions.pack import PAIR_FORMAT
from fineinstructions.records import DocumentRow, PairRow
from fineinstructions.stages.pack import pack_stage, with_token_counts
from fineinstructions.tokens import load_token_counter


@dataclass
class CountTask:
    """Counting the tokens of a batch of documents; gives them back without their text."""

    config: Config
    stage: str = "pack"
    batch_size: int = 256

    def start(self, place) -> Callable[[list[DocumentRow]], list[DocumentRow]]:
        counter = load_token_counter(self.config.pack.tokenizer)

        def count(documents: list[DocumentRow]) -> list[DocumentRow]:
            return [replace(d, text="") for d in with_token_counts(documents, counter)]

        return count


def run_pack(
    pair_paths: Sequence[str | Path],
    document_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    executor=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Pack the pairs; returns the stats also written to ``output/stats.json``."""
    out = prepare_output_dir(output, overwrite=overwrite)
    (out / "stats.json").unlink(missing_ok=True)  # written last: it marks a finished dataset
    from fineinstructions.execution.executor import Files, LocalExecutor

    executor = executor or LocalExecutor()
    tick = time.monotonic()
    read_stats = ReadStats()
    # Counting the documents' tokens (the corpus's budget) is the work of this stage: it
    # runs on the executor's workers; the running budget is then kept here, in order.
    source = Files(tuple(map(str, document_paths)), "documents", fields=config.input.field_mapping(), on_error=config.input.on_error)
    documents = [row for rows in executor.map(source, CountTask(config), read_stats) for row in rows]
    pairs = [row for path in data_files(pair_paths) for row in read_rows([path], PairRow)]
    counter = load_token_counter(config.pack.tokenizer)
    try:
        result, stats = pack_stage(documents, pairs, counter=counter, seed=config.pack.seed)
    except ValueError as error:
        raise UserError(str(error)) from None
    with ShardWriter(out, PairRow, format=config.output.format, rows_per_shard=config.output.rows_per_shard) as writer:
        writer.write(result.kept)
    stats["seconds"] = round(time.monotonic() - tick, 2)
    stats["pairs_per_document"] = round(len(result.kept) / len(documents), 4) if documents else None
    write_dataset_card(out, result.kept, stats, len(documents))
    full = {"read_documents": read_stats.as_dict(), "pack": stats}
    write_json(full, out / "stats.json")
    log(
        f"pack: kept {stats['out']} of {stats['in']} pairs from {stats['documents']} documents "
        f"({stats['kept_tokens']} of {stats['budget_tokens']} budget tokens, {counter.name} tokenizer)"
    )
    return full


def _values(rows: Sequence[PairRow], name: str) -> str:
    found = Counter(getattr(row, name) for row in rows if getattr(row, name))
    return ", ".join(f"`{value}` ({count})" for value, count in found.most_common()) or "none"


def write_dataset_card(out: Path, rows: Sequence[PairRow], stats: dict, documents: int) -> Path:
    """``README.md`` beside the data: what the rows are, how they were made, their columns."""
    ratio = sum(r.excerpt_ratio for r in rows) / len(rows) if rows else 0.0
    cut = sum(r.document_chars is not None for r in rows)
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

- **{len(rows)} pairs** from **{documents} documents** ({len(rows) / documents if documents else 0:.2f} per document)
- {stats['kept_tokens']} tokens of pairs within a budget of {stats['budget_tokens']} document tokens
  (tokenizer `{stats['tokenizer']}`)
- mean excerpt ratio {ratio:.3f}; {cut} pair(s) come from documents cut to fit the model's context

Models and prompt versions:

- instantiated by {_values(rows, "instantiate_model")} with prompt {_values(rows, "instantiate_prompt_version")}
- judged by {_values(rows, "judge_model")} with prompt {_values(rows, "judge_prompt_version")}

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
