"""Helpers shared by the reader tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fineinstructions.errors import InputError
from fineinstructions.io import read_documents
from fineinstructions.records import DocumentRow


def jsonl_bytes(rows: list) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_bytes(jsonl_bytes(rows))
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def error_text(paths, *, reader=read_documents, **kwargs) -> tuple[InputError, str]:
    with pytest.raises(InputError) as caught:
        list(reader(paths, **kwargs))
    return caught.value, str(caught.value)


ROWS = [
    {"id": "a1", "text": "What is the capital of France?", "source": "web"},
    {"id": "a2", "text": "Paris is the capital, and it sits on the Seine.", "source": "wiki"},
    {"id": "a3", "text": "A third row with no source field."},
]
EXPECTED_DOCS = [
    DocumentRow(id="a1", text="What is the capital of France?", source="web"),
    DocumentRow(id="a2", text="Paris is the capital, and it sits on the Seine.", source="wiki"),
    DocumentRow(id="a3", text="A third row with no source field.", source="corpus"),
]
