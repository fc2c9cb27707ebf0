"""``fineinstructions export``: hand a finished dataset, or its control corpus, to a trainer.

Formats:

- ``jsonl``: one object per pair (``id``, ``text``, ``instruction``, ``answer``,
  ``document_id``, ``template_id``), one file per dataset shard;
- ``parquet``: the same columns, one file per shard (``datasets.load_dataset("parquet",
  data_files=...)`` reads them);
- ``hf``: a Hugging Face ``datasets`` folder (``Dataset.save_to_disk``; load it with
  ``datasets.load_from_disk``);
- ``tokens``: pre-tokenized, for trainers that read flat token files (OLMo-core's numpy
  format): ``input_ids.npy``, every pair's tokens followed by the end-of-sequence token,
  as one headerless little-endian ``uint32`` memmap, and ``label_mask.npy``, one byte per
  token, 1 where the loss applies (the answer and its end-of-sequence token; the
  ``Instruction: …\\n\\nAnswer:`` prompt is 0), with ``meta.json`` (token count, dtype,
  the tokenizer and its end-of-sequence id).

The **control corpus** (``control=True``) is the other arm of the paper's experiment: the
source documents as plain text, in order, each followed by end-of-sequence, cut to exactly
the dataset's token count (end-of-sequence tokens included) with the same tokenizer, so
both arms train on the same number of tokens. In the ``tokens`` format the cut is exact;
the text formats hold the cut document's text as decoded from its kept tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.io import read_documents, read_rows, write_json
from fineinstructions.io.formats import format_suffix
from fineinstructions.records import PairRow
from fineinstructions.text.packing import format_pair

FORMATS = ("jsonl", "parquet", "hf", "tokens")
COLUMNS = ("id", "text", "instruction", "answer", "document_id", "template_id")
TOKEN_DTYPE = np.uint32


def dataset_shards(dataset: str | Path) -> list[Path]:
    """The shards of a dataset folder ``pack`` wrote, in order (none when it kept no pair)."""
    folder = Path(dataset)
    files = sorted(f for f in folder.iterdir() if f.name.startswith("part-") and format_suffix(f)) if folder.is_dir() else []
    if not files and not (folder / "stats.json").exists():
        raise UserError(f"{folder} holds no dataset shards (part-*.parquet)\n  fix: give the folder `fineinstructions pack` wrote")
    return files


def dataset_tokenizer(dataset: str | Path, default: str) -> str:
    """The tokenizer ``pack`` counted the dataset with (its stats.json), else ``default``."""
    stats = Path(dataset) / "stats.json"
    if stats.exists():
        return json.loads(stats.read_text(encoding="utf-8")).get("pack", {}).get("tokenizer") or default
    return default


def _records(shard: Path) -> list[dict[str, Any]]:
    return [{name: getattr(pair, name) for name in COLUMNS} | {"text": pair.text or format_pair(pair.instruction, pair.answer)}
            for pair in read_rows([shard], PairRow)]


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty\n  fix: choose another output folder, or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_dataset(
    dataset: str | Path, output: str | Path, *, format: str, tokenizer: str, overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Write the pairs of ``dataset`` to ``output`` in ``format``; returns (and writes
    to ``output/export.json``) what was written."""
    out = Path(output)
    _check_format(format)
    shards = dataset_shards(dataset)
    _prepare(out, overwrite)
    if format == "tokens":
        counter = _counter(tokenizer)
        result = _write_tokens(out, _pair_tokens(shards, counter), counter, tokenizer)
    else:
        result = _write_text(out, format, ((f"part-{i:05d}", _records(shard)) for i, shard in enumerate(shards)))
    result.update({"source": str(Path(dataset).resolve()), "format": format, "kind": "dataset"})
    write_json(result, out / "export.json")
    log(f"export: {result['rows']} pairs" + (f", {result['tokens']} tokens" if "tokens" in result else "") + f" -> {out}")
    return result


def export_control(
    dataset: str | Path, document_paths: Sequence[str | Path], output: str | Path, *, format: str, tokenizer: str,
    overwrite: bool = False, log: Callable[[str], None] = print,
) -> dict:
    """Write the control corpus of ``dataset`` (see the module doc) to ``output``."""
    out = Path(output)
    _check_format(format)
    counter = _counter(tokenizer)
    target = sum(len(ids) for ids, _ in _pair_tokens(dataset_shards(dataset), counter))
    _prepare(out, overwrite)
    pieces: list[tuple[list[int], str, str]] = []  # (token ids with EOS, text, document id)
    total, cut = 0, False
    eos = counter.eos_token_id
    for document in read_documents(document_paths):
        if total >= target:
            break
        ids = counter.encode([document.text])[0] + [eos]
        keep = min(len(ids), target - total)
        cut = keep < len(ids)
        text = counter.decode(ids[:keep]) if cut else document.text
        pieces.append((ids[:keep], text, document.id))
        total += keep
    if total < target:
        raise UserError(
            f"the documents hold {total} tokens, fewer than the dataset's {target}: the control corpus cannot match it\n"
            "  fix: give every document the dataset was made from with --documents"
        )
    if format == "tokens":
        result = _write_tokens(out, ((ids, [1] * len(ids)) for ids, _, _ in pieces), counter, tokenizer)
    else:
        rows = [{"id": doc_id, "text": text, "document_id": doc_id} for _, text, doc_id in pieces]
        result = _write_text(out, format, [("part-00000", rows)])
    result.update({"source": str(Path(dataset).resolve()), "format": format, "kind": "control",
                   "tokens": total, "dataset_tokens": target, "documents": len(pieces), "last_document_cut": cut})
    write_json(result, out / "export.json")
    log(f"export: control corpus of {len(pieces)} documents, {total} tokens (the dataset's {target}) -> {out}")
    return result


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}\n  fix: use one of {', '.join(FORMATS)}")


def _counter(tokenizer: str):
    from fineinstructions.models.tokens import load_token_counter

    return load_token_counter(tokenizer)


def split_prompt(counter, instruction: str, answer: str) -> tuple[list[int], list[int]]:
    """The token ids of a pair's training text cut where its answer starts: the prompt
    ``Instruction: …\n\nAnswer:`` and the rest. The cut is where the prompt's own tokens
    stop matching the text's (the tokenizer usually splits exactly there)."""
    full = counter.encode([format_pair(instruction, answer)])[0]
    prompt = counter.encode([format_pair(instruction, "").rstrip()])[0]
    shared = next((i for i, (a, b) in enumerate(zip(full, prompt, strict=False)) if a != b), min(len(full), len(prompt)))
    return full[:shared], full[shared:]


def _pair_tokens(shards: Sequence[Path], counter) -> Iterator[tuple[list[int], list[int]]]:
    """Each pair's token ids (its training text, then end-of-sequence) and loss mask
    (1 on the answer's tokens and the end-of-sequence token)."""
    eos = counter.eos_token_id
    for shard in shards:
        for pair in read_rows([shard], PairRow):
            prompt, answer = split_prompt(counter, pair.instruction, pair.answer)
            yield prompt + answer + [eos], [0] * len(prompt) + [1] * (len(answer) + 1)


def _write_tokens(out: Path, items, counter, tokenizer: str) -> dict:
    rows = tokens = answer_tokens = 0
    with open(out / "input_ids.npy", "wb") as ids_file, open(out / "label_mask.npy", "wb") as mask_file:
        for ids, mask in items:
            ids_file.write(np.asarray(ids, dtype=TOKEN_DTYPE).astype("<u4").tobytes())
            mask_file.write(np.asarray(mask, dtype=np.uint8).tobytes())
            rows += 1
            tokens += len(ids)
            answer_tokens += int(sum(mask))
    meta = {"rows": rows, "tokens": tokens, "loss_tokens": answer_tokens, "dtype": "uint32", "byte_order": "little",
            "files": {"input_ids": "input_ids.npy", "label_mask": "label_mask.npy"}, "tokenizer": tokenizer,
            "eos_token_id": counter.eos_token_id, "vocab_size": counter.vocab_size}
    write_json(meta, out / "meta.json")
    return dict(meta)


def _write_text(out: Path, format: str, parts: Iterable[tuple[str, list[dict]]]) -> dict:
    """Write ``parts`` (a name and its rows, read one at a time) as ``format``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if format == "hf":
        try:
            import datasets
        except ImportError:
            raise MissingDependencyError("datasets", "experiments", "exporting a Hugging Face dataset") from None
        staged = _write_text(out / ".cache" / "parquet", "parquet", parts)  # streamed to Parquet first
        files = [str(out / ".cache" / "parquet" / name) for name in staged["files"]]
        if files:
            data = datasets.Dataset.from_parquet(files, cache_dir=str(out / ".cache" / "hf"))
        else:
            data = datasets.Dataset.from_dict({})
        data.save_to_disk(str(out / "data"))
        shutil.rmtree(out / ".cache", ignore_errors=True)
        return {"rows": staged["rows"], "files": ["data"]}
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    names = []
    for name, records in parts:
        rows += len(records)
        if not records:
            continue
        if format == "jsonl":
            path = out / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        else:
            path = out / f"{name}.parquet"
            pq.write_table(pa.Table.from_pylist(records), path)
        names.append(path.name)
    return {"rows": rows, "files": names}
