"""The readers on the real shared data (../shared/data), read at test time only.

The rows are public, human-written text kept outside this repository; nothing here copies
them in. Every check compares the readers with the file read independently by ``json``.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.io import ReadStats, read_documents, read_queries
from fineinstructions.records import DocumentRow, QueryRow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUERIES = DATA / "queries.jsonl"
DOCUMENTS = DATA / "documents.jsonl"

pytestmark = pytest.mark.skipif(
    not (QUERIES.is_file() and DOCUMENTS.is_file()),
    reason=f"the shared real data is not here ({DATA} should hold queries.jsonl and documents.jsonl)",
)

# The README's table (../shared/data/README.md).
QUERY_SOURCES = {
    "natural-questions": 1500,
    "ms-marco": 800,
    "quora": 500,
    "fiqa": 150,
    "chatbot-arena": 250,
    "awesome-chatgpt-prompts": 110,
}
STACKEXCHANGE_QUERIES = 800
STACKEXCHANGE_SITES = 12
DOCUMENT_SOURCES = {"c4": 150, "wikipedia": 15, "cnn-dailymail": 97, "xsum-bbc": 100}


def raw_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def raw_queries() -> list[dict]:
    return raw_rows(QUERIES)


@pytest.fixture(scope="module")
def raw_documents() -> list[dict]:
    return raw_rows(DOCUMENTS)


@pytest.fixture(scope="module")
def documents() -> list[DocumentRow]:
    return list(read_documents([DOCUMENTS]))


def test_every_query_row_yields_its_record(raw_queries):
    stats = ReadStats()
    queries = list(read_queries([QUERIES], stats=stats))
    assert len(queries) == 4110
    assert stats.as_dict() == {"rows": 4110, "records": 4110, "skipped": {}}
    assert queries == [QueryRow(id=r["id"], text=r["text"], source=r["source"]) for r in raw_queries]
    assert len({q.id for q in queries}) == 4110


def test_query_counts_per_source_match_the_readme():
    counts = Counter(q.source for q in read_queries([QUERIES]))
    assert {s: counts[s] for s in QUERY_SOURCES} == QUERY_SOURCES
    stackexchange = {s: n for s, n in counts.items() if s.startswith("stackexchange-")}
    assert sum(stackexchange.values()) == STACKEXCHANGE_QUERIES
    assert len(stackexchange) == STACKEXCHANGE_SITES
    assert set(counts) == set(QUERY_SOURCES) | set(stackexchange)
    assert sum(counts.values()) == 4110


def test_every_document_row_yields_its_record(documents, raw_documents):
    assert len(documents) == 362
    assert documents == [
        DocumentRow(id=r["id"], text=r["text"], source=r["source"]) for r in raw_documents
    ]
    assert len({d.id for d in documents}) == 362
    assert all(d.token_count is None for d in documents)


def test_document_counts_per_source_match_the_readme(documents):
    assert Counter(d.source for d in documents) == DOCUMENT_SOURCES


def test_real_data_read_twice_gives_the_same_records(documents):
    assert list(read_documents([DOCUMENTS])) == documents


def test_real_documents_without_ids_get_stable_content_ids(tmp_path, raw_documents):
    path = tmp_path / "no-ids.jsonl"
    path.write_text(
        "".join(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n" for r in raw_documents),
        encoding="utf-8",
    )
    first = [d.id for d in read_documents([path])]
    assert first == [d.id for d in read_documents([path])]
    assert first == [DocumentRow.make_id(r["text"]) for r in raw_documents]
    assert len(set(first)) == len({r["text"] for r in raw_documents})
    assert {d.source for d in read_documents([path])} == {"no-ids"}


def test_real_documents_are_identical_in_all_four_formats(tmp_path, documents, raw_documents):
    columns = {name: [r[name] for r in raw_documents] for name in ("id", "text", "source")}

    jsonl = tmp_path / "documents.jsonl"
    shutil.copyfile(DOCUMENTS, jsonl)  # the temporary copy, not the repository

    parquet = tmp_path / "documents.parquet"
    pq.write_table(pa.table(columns), parquet, row_group_size=100)

    csv_path = tmp_path / "documents.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "source"])
        writer.writerows([r["id"], r["text"], r["source"]] for r in raw_documents)

    gz = tmp_path / "documents.jsonl.gz"
    with gzip.open(gz, "wb") as handle:
        handle.write(DOCUMENTS.read_bytes())

    results = {path.name: list(read_documents([path])) for path in (jsonl, parquet, csv_path, gz)}
    for name, rows in results.items():
        assert rows == documents, name

    # All four at once, as a folder: sorted by file name, each file's rows in order.
    assert list(read_documents([tmp_path])) == documents * 4


def test_real_queries_through_csv_and_parquet(tmp_path, raw_queries):
    expected = list(read_queries([QUERIES]))
    parquet = tmp_path / "queries.parquet"
    pq.write_table(pa.Table.from_pylist(raw_queries), parquet)
    csv_path = tmp_path / "queries.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "source", "text"])
        writer.writeheader()
        writer.writerows(raw_queries)
    assert list(read_queries([parquet])) == expected
    assert list(read_queries([csv_path])) == expected
