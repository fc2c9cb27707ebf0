"""Readers on bad input: errors that name file, line and field; skipped rows counted."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import InputError, UserError
from fineinstructions.io import ReadStats, read_documents, read_queries
from support.readers import (
    error_text,
    jsonl_bytes,
    write_csv,
    write_jsonl,
)

# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content, location, fragments",
    [
        (b'{"text": "ok"}\n{"text": "ok"}\n{"text": "broken\n', "line 3", ["invalid JSON"]),
        (b'{"text": "ok"}\n{"text": "cut off', "line 2", ["invalid JSON (Unterminated string starting at column 10)"]),
        (b'{"text": "ok"}\n[1, 2]\n', "line 2", ["expected a JSON object, got a JSON list"]),
        (b'"just a string"\n', "line 1", ["expected a JSON object, got a JSON str"]),
        (b'{"text": "ok"}\n{"body": "x"}\n', "line 2", ["field 'text'", "missing", "'body'", "--text-field"]),
        (b'{"text": 42}\n', "line 1", ["field 'text'", "expected a string, got int"]),
        (b'{"text": null}\n', "line 1", ["field 'text'", "expected a string, got null"]),
        (b'{"text": ["a", "b"]}\n', "line 1", ["field 'text'", "expected a string, got list"]),
        (b'{"text": {"a": 1}}\n', "line 1", ["field 'text'", "expected a string, got dict"]),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2", ["not valid UTF-8", "0xe9", "iconv"]),
    ],
    ids=["invalid-json", "unterminated", "array", "string", "missing-text", "int", "null", "list", "dict", "utf8"],
)
def test_bad_jsonl_rows_raise_with_file_line_and_fix(tmp_path, content, location, fragments):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    for reader in (read_documents, read_queries):
        error, message = error_text([path], reader=reader)
        assert isinstance(error, UserError)
        assert message.startswith(f"{path}, {location}: ")
        assert error.path == str(path) and error.location == location
        for fragment in fragments:
            assert fragment in message
        assert "\n  fix: " in message


def test_blank_lines_are_not_rows_but_still_counted_in_line_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n   \n{"text": 1}\n')
    stats = ReadStats()
    error, _ = error_text([path], stats=stats)
    assert error.location == "line 4"
    assert stats.rows == 2


def test_parquet_bad_rows_name_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["fine", None]}), path)
    error, message = error_text([path])
    assert message.startswith(f"{path}, row 2: field 'text': expected a string, got null")
    assert "fix:" in message


def test_parquet_non_string_text_column(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [10, 20]}), path)
    error, message = error_text([path])
    assert error.location == "row 1" and "expected a string, got int" in message


def test_csv_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,text\n1,plain\n2,café\n".encode("latin-1"))
    for on_error in ("raise", "skip"):  # a CSV that does not decode cannot be read at all
        error, message = error_text([path], on_error=on_error)
        assert message.startswith(f"{path}, line 3: not valid UTF-8 (byte 0xe9")
        assert "fix: convert the file to UTF-8" in message


def test_csv_missing_text_column(tmp_path):
    path = write_csv(tmp_path / "cols.csv", ["id", "body"], [["1", "x"]])
    error, message = error_text([path])
    assert error.field == "text" and error.location == "line 2"
    assert "--text-field" in message


def test_csv_row_with_too_few_values_has_null_text(tmp_path):
    path = tmp_path / "short.csv"
    path.write_bytes(b"id,text\n1,ok\n2\n")
    error, message = error_text([path])
    assert error.location == "line 3" and "expected a string, got null" in message


def test_truncated_gzip(tmp_path):
    whole = gzip.compress(jsonl_bytes([{"text": f"row {i} " * 20} for i in range(2000)]))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    error, message = error_text([path])
    assert message.startswith(f"{path}: the compressed file is truncated or corrupt")
    assert "fix:" in message


def test_file_named_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(b'{"text": "not compressed"}\n')
    _, message = error_text([path])
    assert message.startswith(f"{path}: not a valid gzip file")
    assert "fix:" in message


def test_file_named_parquet_that_is_not_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"PAR1 but not really")
    _, message = error_text([path])
    assert message.startswith(f"{path}: not a readable Parquet file")
    assert "fix:" in message


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text('{"text": "x"}\n')
    _, message = error_text([path])
    assert message.startswith(f"{path}: unsupported file type")
    assert "fix: use one of" in message and ".jsonl.gz" in message and ".parquet" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.jsonl"
    for reader in (read_documents, read_queries):
        _, message = error_text([path], reader=reader)
        assert message.startswith(f"{path}: no such file")
        assert "fix:" in message


def test_bad_on_error_value(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "t"}])
    with pytest.raises(ValueError, match="on_error"):
        list(read_documents([path], on_error="ignore"))


# ---------------------------------------------------------------- skipping


def test_empty_and_whitespace_texts_are_skipped_and_counted(tmp_path):
    rows = [{"text": ""}, {"text": "kept"}, {"text": "   "}, {"text": "\n\t \u3000"}, {"text": "also kept"}]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    for reader in (read_documents, read_queries):
        stats = ReadStats()
        assert [r.text for r in reader([path], stats=stats)] == ["kept", "also kept"]
        assert stats.skipped == {"empty_text": 3}
        assert stats.rows == 5 and stats.records == 2 and stats.errors == []


def test_empty_csv_cells_are_skipped(tmp_path):
    path = write_csv(tmp_path / "x.csv", ["id", "text"], [["1", ""], ["2", "kept"], ["3", "  "]])
    stats = ReadStats()
    assert [d.id for d in read_documents([path], stats=stats)] == ["2"]
    assert stats.skipped == {"empty_text": 2}


def test_skip_mode_keeps_every_valid_row(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        b'{"id": "1", "text": "one"}',
        b"{not json",
        b'{"id": "2", "text": "two"}',
        b"[1]",
        b'{"id": "3", "text": ""}',
        b'{"id": "4", "body": "no text"}',
        b'{"id": "5", "text": "five"}',
        b'{"id": "6", "text": 6}',
        b'{"id": "7", "text": "s\xffven"}',
        b'{"id": "8", "text": "eight"}',
        b'{"id": ["x"], "text": "bad id"}',
        b'{"id": "10", "text": "ten"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = ReadStats()
    docs = list(read_documents([path], stats=stats, on_error="skip"))
    assert [d.id for d in docs] == ["1", "2", "5", "8", "10"]
    assert [d.text for d in docs] == ["one", "two", "five", "eight", "ten"]
    assert stats.skipped == {"invalid_row": 6, "empty_text": 1}
    assert stats.rows == 12 and stats.records == 5
    assert [e.location for e in stats.errors] == ["line 2", "line 4", "line 6", "line 8", "line 9", "line 11"]
    assert all(isinstance(e, InputError) and e.path == str(path) for e in stats.errors)
    assert stats.as_dict() == {"rows": 12, "records": 5, "skipped": {"invalid_row": 6, "empty_text": 1}}


def test_skip_mode_for_chat_rows_keeps_valid_turns(tmp_path):
    row = {
        "id": "c",
        "messages": [
            {"role": "user", "content": "good"},
            {"role": "user", "content": 12},
            {"role": "user", "content": "also good"},
        ],
    }
    path = write_jsonl(tmp_path / "chats.jsonl", [row])
    stats = ReadStats()
    assert [q.id for q in read_queries([path], stats=stats, on_error="skip")] == ["c#0", "c#2"]
    assert stats.skipped == {"invalid_row": 1}
    assert stats.errors[0].field == "messages[1].content"


def test_stats_accumulate_over_several_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"text": ""}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "y"}])
    stats = ReadStats()
    list(read_documents([a, b], stats=stats))
    assert stats.as_dict() == {"rows": 3, "records": 2, "skipped": {"empty_text": 1}}
