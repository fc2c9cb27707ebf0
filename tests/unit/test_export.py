"""export: the dataset and its token-for-token control corpus, in every format, read back
the way trainers read them (with the embedded model's real tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fineinstructions.errors import UserError
from fineinstructions.experiments.export import export_control, export_dataset
from fineinstructions.io import ShardWriter
from fineinstructions.models.tokens import load_token_counter
from fineinstructions.records import PairRow
from support.audit_rows import CLEAN, DOCUMENTS

QUIET = {"log": lambda message: None}


@pytest.fixture(scope="module")
def counter():
    return load_token_counter("embedded")


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "dataset"
    with ShardWriter(folder, PairRow, rows_per_shard=2) as writer:  # two shards
        writer.write(CLEAN)
    (folder / "stats.json").write_text(json.dumps({"pack": {"tokenizer": "embedded"}}))
    documents = tmp_path / "documents.jsonl"
    documents.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCUMENTS.items()))
    return folder, documents


def test_text_formats_round_trip(dataset, tmp_path):
    import datasets

    folder, _ = dataset
    for format in ("jsonl", "parquet"):
        result = export_dataset(folder, tmp_path / format, format=format, tokenizer="embedded", **QUIET)
        assert result["rows"] == 3 and len(result["files"]) == 2
    rows = [json.loads(line) for f in sorted((tmp_path / "jsonl").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [r["text"] for r in rows] == [p.text for p in CLEAN]
    loaded = datasets.load_dataset("parquet", data_files=sorted(str(f) for f in (tmp_path / "parquet").glob("*.parquet")))
    assert loaded["train"]["text"] == [p.text for p in CLEAN]
    export_dataset(folder, tmp_path / "hf", format="hf", tokenizer="embedded", **QUIET)
    on_disk = datasets.load_from_disk(str(tmp_path / "hf" / "data"))
    assert on_disk.num_rows == 3 and on_disk["answer"] == [p.answer for p in CLEAN]
    with pytest.raises(UserError, match="not empty"):
        export_dataset(folder, tmp_path / "hf", format="hf", tokenizer="embedded", **QUIET)


def test_token_shards_hold_every_pair_with_the_answer_masked_for_loss(dataset, tmp_path, counter):
    folder, _ = dataset
    result = export_dataset(folder, tmp_path / "tokens", format="tokens", tokenizer="embedded", **QUIET)
    ids = np.memmap(tmp_path / "tokens" / "input_ids.npy", dtype="<u4", mode="r")
    mask = np.memmap(tmp_path / "tokens" / "label_mask.npy", dtype=np.uint8, mode="r")
    assert len(ids) == len(mask) == result["tokens"] == sum(counter.count([p.text for p in CLEAN])) + len(CLEAN)
    eos = counter.eos_token_id
    ends = np.flatnonzero(ids == eos)
    assert len(ends) == len(CLEAN) and ends[-1] == len(ids) - 1
    start = 0
    for pair, end in zip(CLEAN, ends, strict=True):
        tokens, loss = ids[start:end], mask[start:end]
        assert counter.decode(tokens[loss == 0]) == f"Instruction: {pair.instruction}\n\nAnswer:"
        assert counter.decode(tokens[loss == 1]).strip() == pair.answer
        assert mask[end] == 1  # the end-of-sequence token is learned too
        start = end + 1


def test_the_control_corpus_has_exactly_the_datasets_tokens(dataset, tmp_path, counter):
    folder, documents = dataset
    pairs = export_dataset(folder, tmp_path / "pairs", format="tokens", tokenizer="embedded", **QUIET)
    control = export_control(folder, [documents], tmp_path / "control", format="tokens", tokenizer="embedded", **QUIET)
    assert control["tokens"] == control["dataset_tokens"] == pairs["tokens"]
    ids = np.memmap(tmp_path / "control" / "input_ids.npy", dtype="<u4", mode="r")
    assert len(ids) == pairs["tokens"] and np.all(np.memmap(tmp_path / "control" / "label_mask.npy", dtype=np.uint8) == 1)
    texts = list(DOCUMENTS.values())
    first = counter.encode([texts[0]])[0] + [counter.eos_token_id]
    assert list(ids[: len(first)]) == first  # the documents in order, as plain text
    as_text = export_control(folder, [documents], tmp_path / "control-jsonl", format="jsonl", tokenizer="embedded", **QUIET)
    rows = [json.loads(line) for line in (tmp_path / "control-jsonl" / "part-00000.jsonl").read_text().splitlines()]
    assert [r["document_id"] for r in rows] == list(DOCUMENTS)[: len(rows)] and as_text["last_document_cut"]
    assert rows[0]["text"] == texts[0] and texts[len(rows) - 1].startswith(rows[-1]["text"].rstrip())
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"id": "a", "text": "Too short."}) + "\n")
    with pytest.raises(UserError, match="fewer than the dataset's"):
        export_control(folder, [short], tmp_path / "control-short", format="jsonl", tokenizer="embedded", **QUIET)
