"""Silver data for the helpers (DESIGN §7): a teacher's validated outputs, written in the
released models' contract so a student fine-tuned on them plugs back in with
``mode = "fineinstructions"``.

A silver folder is a dataset folder like the others: ``part-NNNNN.parquet`` shards of
rows with a chat ``messages`` column (the user turn and the assistant's target), plus
``stats.json`` and ``rejects.jsonl``. The rows come from stage outputs that already
passed the pipeline's validation (the templatize and instantiate stages run with the
teacher); this module only turns them into training examples:

- templatizer: the bare query as the user message; the JSON object ``{"template",
  "compatible_document_description"}`` as the target;
- instantiator: the JSON ``{"instruction_template", "document"}`` as the user message
  (the document as the teacher saw it); ``{"instruction", "answer"}`` with the answer's
  excerpts written back as compact ``<excerpt>PREFIX<...>SUFFIX</excerpt>`` markers (each
  checked to expand to exactly the teacher's text), or ``null`` for a deliberately
  mismatched (document, template) pair, so the student learns to refuse.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from fineinstructions.errors import UserError
from fineinstructions.io import write_json
from fineinstructions.io.writers import atomic_write, write_table
from fineinstructions.records import PairRow, RejectRow, TemplateRow, row_to_dict
from fineinstructions.stages.instantiate import released_user_turn
from fineinstructions.text.excerpt import (
    ELLIPSIS,
    MARKER_CLOSE,
    MARKER_OPEN,
    SearchableDocument,
    expand_excerpts,
)

HELPERS = ("templatizer", "instantiator")
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("helper", pa.string()),
    ("target", pa.string()),  # "template", "pair" or "null"
    ("messages", MESSAGES),
    ("query_id", pa.string()),
    ("template_id", pa.string()),
    ("document_id", pa.string()),
    ("teacher", pa.string()),
    ("prompt_version", pa.string()),
])
ROWS_PER_SHARD = 50_000
# Excerpt markers quote this many words either side of <...>, widened until the marker
# expands to exactly the teacher's text (None: the whole excerpt, always exact).
MARKER_WORDS = (4, 8, 16, None)


def _messages(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def templatizer_row(query: str, template: TemplateRow) -> dict[str, Any]:
    target = {"template": template.template, "compatible_document_description": template.compatible_document_description}
    return {
        "id": template.query_id, "helper": "templatizer", "target": "template",
        "messages": _messages(query, json.dumps(target, ensure_ascii=False)),
        "query_id": template.query_id, "template_id": template.id, "document_id": None,
        "teacher": template.model, "prompt_version": template.prompt_version,
    }


def _marker(quoted: str, words: int | None) -> str:
    parts = quoted.split()
    if words is None or len(parts) <= 2 * words:
        return f"{MARKER_OPEN}{quoted}{MARKER_CLOSE}"
    return f"{MARKER_OPEN}{' '.join(parts[:words])}{ELLIPSIS}{' '.join(parts[-words:])}{MARKER_CLOSE}"


def compact_answer(answer: str, spans: Sequence[tuple[int, int]], document: str | SearchableDocument) -> str | None:
    """``answer`` (expanded text quoting ``document`` at ``spans``, in order) with each
    quoted span written as a compact excerpt marker, or None when no marker width
    expands back to exactly ``answer``."""
    searchable = document if isinstance(document, SearchableDocument) else SearchableDocument(document)
    text = searchable.text
    pieces: list[str | tuple[int, int]] = []
    cursor = 0
    for start, end in spans:
        quoted = text[start:end]
        at = answer.find(quoted, cursor)
        if not quoted or at < 0:
            return None
        pieces += [answer[cursor:at], (start, end)]
        cursor = at + len(quoted)
    pieces.append(answer[cursor:])
    for words in MARKER_WORDS:
        compact = "".join(p if isinstance(p, str) else _marker(text[p[0]:p[1]], words) for p in pieces)
        expansion = expand_excerpts(compact, searchable)
        if not expansion.errors and expansion.text.strip() == answer.strip():
            return compact
    return None


def instantiator_row(pair: PairRow, template: str, teacher_saw: str) -> dict[str, Any] | None:
    """The silver example of a grounded pair, with the document as the teacher saw it
    (None when its excerpts cannot be written back compactly)."""
    answer = compact_answer(pair.answer, pair.excerpt_spans, teacher_saw)
    if answer is None:
        return None
    target = {"instruction": pair.instruction, "answer": answer}
    return {
        "id": pair.id, "helper": "instantiator", "target": "pair",
        "messages": _messages(released_user_turn(teacher_saw, template), json.dumps(target, ensure_ascii=False)),
        "query_id": pair.query_id, "template_id": pair.template_id, "document_id": pair.document_id,
        "teacher": pair.instantiate_model, "prompt_version": pair.instantiate_prompt_version,
    }


def null_rows(
    seen: Mapping[str, str], templates: Mapping[str, tuple[str, str]], matched: Mapping[str, set[str]], count: int,
    *, seed: int,
) -> list[dict[str, Any]]:
    """``count`` deliberately mismatched examples (target ``null``): a document that has
    silver pairs (as the teacher saw it, in ``seen``) with a template of the bank (id ->
    (text, query id)) that was not retrieved for it (``matched``). Seeded; fewer when
    the bank holds too few other templates."""
    documents, bank = sorted(seen), sorted(templates)
    rng = np.random.default_rng(seed)
    made: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(count * 20):
        if len(made) >= count or not documents or not bank:
            break
        document = documents[int(rng.integers(len(documents)))]
        template = bank[int(rng.integers(len(bank)))]
        if template in matched.get(document, ()) or (document, template) in made:
            continue
        text, query_id = templates[template]
        made[document, template] = {
            "id": PairRow.make_id(document, template), "helper": "instantiator", "target": "null",
            "messages": _messages(released_user_turn(seen[document], text), "null"),
            "query_id": query_id, "template_id": template, "document_id": document,
            "teacher": None, "prompt_version": None,
        }
    return list(made.values())


def null_count(pairs: int, share: float) -> int:
    """How many null examples make them ``share`` of all examples, next to ``pairs``."""
    if not 0 <= share < 1:
        raise UserError(f"the null share must be at least 0 and below 1, not {share}")
    return round(pairs * share / (1 - share))


def drop(row_id: str, reason: str, detail: str, *, input: str = "", raw_output: str = "") -> RejectRow:
    return RejectRow(stage="distill", input_id=row_id, reason=reason, detail=detail, input=input, raw_output=raw_output,
                     model="", prompt_version="")


def write_silver(
    out: Path, helper: str, rows: Iterable[dict[str, Any]], rejects: Sequence[RejectRow], stage_rejects: Sequence[Path],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Write the silver shards, ``rejects.jsonl`` (the stage's rejects, then the rows the
    conversion dropped) and ``stats.json`` (written last: the folder is complete when it
    exists)."""
    for old in [*out.glob("part-*.parquet"), out / "stats.json"]:
        old.unlink(missing_ok=True)
    targets: Counter = Counter()
    buffer: list[dict[str, Any]] = []
    shard = 0

    def flush() -> None:
        nonlocal shard, buffer
        if buffer:
            write_table(pa.Table.from_pylist(buffer, schema=SCHEMA), out / f"part-{shard:05d}.parquet")
            shard, buffer = shard + 1, []

    for row in rows:
        targets[row["target"]] += 1
        buffer.append(row)
        if len(buffer) >= ROWS_PER_SHARD:
            flush()
    flush()
    lines = [line for path in stage_rejects if path.exists() for line in path.read_text(encoding="utf-8").splitlines() if line]
    lines += [json.dumps(row_to_dict(reject), ensure_ascii=False) for reject in rejects]
    atomic_write(out / "rejects.jsonl", lambda tmp: tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8"))
    total = sum(targets.values())
    stats = {"helper": helper, "rows": total, "targets": dict(targets), **stats,
             "dropped": dict(Counter(r.reason for r in rejects)), "rejects_file": str(out / "rejects.jsonl")}
    if helper == "instantiator":
        stats["null_share"] = round(targets["null"] / total, 4) if total else None
    write_json(stats, out / "stats.json")
    return stats


def silver_stats(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "stats.json"
    if not path.exists():
        raise UserError(
            f"{folder} holds no finished silver data (no stats.json)\n"
            "  fix: make it with `fineinstructions distill templatizer|instantiator ... -o FOLDER` (run again to resume)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def read_silver(folder: str | Path, helper: str) -> list[dict[str, Any]]:
    """The silver examples of ``folder`` for ``helper``: dicts with ``messages``."""
    stats = silver_stats(folder)
    if stats.get("helper") != helper:
        raise UserError(
            f"{folder} holds silver data for the {stats.get('helper')}, not the {helper}\n"
            f"  fix: train the {stats.get('helper')} on it, or make {helper} silver data with `fineinstructions distill {helper}`"
        )
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("part-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    if not rows:
        raise UserError(f"{folder} holds no silver examples (see its stats.json and rejects.jsonl for why)")
    return rows

