"""Readers: JSONL, JSONL.gz, CSV, Parquet and folders in; QueryRow / DocumentRow out."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.errors import InputError, UserError
from fineinstructions.io import FieldMapping, ReadStats, input_files, read_documents, read_queries
from fineinstructions.records import DocumentRow, QueryRow

# ---------------------------------------------------------------- helpers


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

# ---------------------------------------------------------------- formats


def test_jsonl_documents(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    stats = ReadStats()
    assert list(read_documents([path], stats=stats)) == EXPECTED_DOCS
    assert stats.as_dict() == {"rows": 3, "records": 3, "skipped": {}}
    assert stats.errors == []


def test_jsonl_queries(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", ROWS)
    assert list(read_queries([path])) == [
        QueryRow(id=d.id, text=d.text, source=d.source) for d in EXPECTED_DOCS
    ]


def test_ndjson_suffix_and_str_paths(tmp_path):
    path = write_jsonl(tmp_path / "corpus.ndjson", ROWS)
    assert list(read_documents([str(path)])) == EXPECTED_DOCS


def test_jsonl_gz(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    assert list(read_documents([path])) == EXPECTED_DOCS


def test_parquet(tmp_path):
    path = tmp_path / "corpus.parquet"
    table = pa.table(
        {
            "id": [r["id"] for r in ROWS],
            "text": [r["text"] for r in ROWS],
            "source": [r.get("source") for r in ROWS],  # null source → file name
            "extra": [1, 2, 3],  # columns the reader does not use are ignored
        }
    )
    pq.write_table(table, path)
    assert list(read_documents([path])) == EXPECTED_DOCS


def test_parquet_integer_ids_become_strings(tmp_path):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": [7, 8], "text": ["seven", "eight"]}), path)
    assert [d.id for d in read_documents([path])] == ["7", "8"]


def test_parquet_many_batches_keeps_order(tmp_path):
    path = tmp_path / "big.parquet"
    texts = [f"document number {i}" for i in range(10_000)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=3000)
    docs = list(read_documents([path]))
    assert [d.text for d in docs] == texts


def test_csv_with_quoted_newlines_commas_and_quotes(tmp_path):
    tricky = [
        ["1", 'He said, "hello, world"\nand then\nleft.', "forum"],
        ["2", "plain", ""],  # empty source → the file name
        ["3", "trailing newline\n", "forum"],
    ]
    path = write_csv(tmp_path / "posts.csv", ["id", "text", "source"], tricky)
    assert list(read_documents([path])) == [
        DocumentRow(id="1", text='He said, "hello, world"\nand then\nleft.', source="forum"),
        DocumentRow(id="2", text="plain", source="posts"),
        DocumentRow(id="3", text="trailing newline\n", source="forum"),
    ]


def test_csv_crlf_line_endings(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b"id,text\r\n1,first query\r\n2,second query\r\n")
    assert list(read_queries([path])) == [
        QueryRow(id="1", text="first query", source="q"),
        QueryRow(id="2", text="second query", source="q"),
    ]


def test_csv_gz(tmp_path):
    path = tmp_path / "q.csv.gz"
    path.write_bytes(gzip.compress(b'text\n"a, b"\nc\n'))
    assert [q.text for q in read_queries([path])] == ["a, b", "c"]


def test_csv_row_with_too_many_values_names_its_line(tmp_path):
    # The first record spans lines 2-3, so the bad row is on line 4.
    path = tmp_path / "bad.csv"
    path.write_bytes(b'id,text\n1,"two\nlines"\n2,unquoted, comma\n')
    _, message = error_text([path])
    assert str(path) in message
    assert "line 4" in message
    assert "3 values but the header names 2 columns" in message
    assert "fix: quote values that contain commas" in message


# ---------------------------------------------------------------- folders


def test_folder_is_read_sorted_and_skips_hidden_and_temporary_files(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / ".cache").mkdir()
    write_jsonl(folder / "b.jsonl", [{"text": "from b"}])
    write_jsonl(folder / "a.jsonl", [{"text": "from a"}])
    write_csv(folder / "sub" / "c.csv", ["text"], [["from c"]])
    write_jsonl(folder / ".hidden.jsonl", [{"text": "hidden"}])
    write_jsonl(folder / ".cache" / "x.jsonl", [{"text": "in a hidden folder"}])
    write_jsonl(folder / ".part-00000.parquet.1a2b3c4d.tmp", [{"text": "unfinished"}])
    (folder / ".part-00001.jsonl.1a2b3c4d.tmp").write_text('{"text": "unfinished"}\n')
    (folder / "notes.txt").write_text("not an input")

    assert input_files([folder]) == [folder / "a.jsonl", folder / "b.jsonl", folder / "sub" / "c.csv"]
    docs = list(read_documents([folder]))
    assert [(d.text, d.source) for d in docs] == [("from a", "a"), ("from b", "b"), ("from c", "c")]


def test_files_and_folders_keep_the_given_order(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "x.jsonl", [{"text": "x"}])
    single = write_jsonl(tmp_path / "first.jsonl", [{"text": "first"}])
    assert [d.text for d in read_documents([single, folder, single])] == ["first", "x", "first"]


def test_folder_without_inputs_is_an_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing")
    _, message = error_text([folder])
    assert str(folder) in message
    assert "holds no" in message and ".jsonl" in message and ".parquet" in message
    assert "fix:" in message


# ---------------------------------------------------------------- chats


def test_chat_rows_only_user_turns_become_queries(tmp_path):
    chat = {
        "id": "c7",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "How do I boil an egg?"},
            {"role": "assistant", "content": "Put it in boiling water for 8 minutes."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And a soft one?"},
                    {"type": "text", "text": "Runny yolk, please."},
                ],
            },
            {"role": "assistant", "content": "Six minutes."},
            {"role": "Human", "content": [{"text": "Thanks!"}]},  # no type: a text part
        ],
    }
    path = write_jsonl(tmp_path / "chats.jsonl", [chat])
    stats = ReadStats()
    queries = list(read_queries([path], stats=stats))
    assert queries == [
        QueryRow(id="c7#1", text="How do I boil an egg?", source="chats"),
        QueryRow(id="c7#3", text="And a soft one?\nRunny yolk, please.", source="chats"),
        QueryRow(id="c7#5", text="Thanks!", source="chats"),
    ]
    assert stats.as_dict() == {"rows": 1, "records": 3, "skipped": {}}
    texts = {q.text for q in queries}
    assert not texts & {"You are a helpful assistant.", "Put it in boiling water for 8 minutes.", "Six minutes."}


def test_chat_rows_without_id_get_content_hash_ids(tmp_path):
    chat = {
        "source": "arena",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "second question"},
        ],
    }
    path = write_jsonl(tmp_path / "chats.jsonl", [chat])
    queries = list(read_queries([path]))
    assert queries == [
        QueryRow(id=QueryRow.make_id("first question"), text="first question", source="arena"),
        QueryRow(id=QueryRow.make_id("second question"), text="second question", source="arena"),
    ]
    assert all(re.fullmatch(r"q-[0-9a-f]{16}", q.id) for q in queries)


def test_chat_with_no_user_turn_and_empty_user_turns_are_counted(tmp_path):
    rows = [
        {"id": "1", "messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
        {"id": "2", "messages": [{"role": "user", "content": "   "}, {"role": "user", "content": "real"}]},
    ]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    stats = ReadStats()
    assert list(read_queries([path], stats=stats)) == [QueryRow(id="2#1", text="real", source="chats")]
    assert stats.skipped == {"no_user_turn": 1, "empty_text": 1}
    assert stats.rows == 2 and stats.records == 1


def test_chat_with_non_text_content_part_is_an_error(tmp_path):
    rows = [
        {
            "id": "9",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "x.png"}]},
            ],
        }
    ]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    error, message = error_text([path], reader=read_queries)
    assert error.field == "messages[0].content"
    assert str(path) in message and "line 1" in message
    assert "field 'messages[0].content'" in message and "fix:" in message


def test_chat_messages_not_a_list_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [{"messages": "hello"}])
    error, message = error_text([path], reader=read_queries)
    assert error.field == "messages"
    assert "expected a list of messages, got str" in message


def test_chat_message_without_role_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"content": "hi"}]}])
    error, message = error_text([path], reader=read_queries)
    assert error.field == "messages[0]"
    assert "line 1" in message


def test_messages_field_mapping(tmp_path):
    row = {"conversation": [{"role": "user", "content": "mapped chat"}], "key": "k1"}
    path = write_jsonl(tmp_path / "chats.jsonl", [row])
    fields = FieldMapping(messages="conversation", id="key")
    assert list(read_queries([path], fields=fields)) == [
        QueryRow(id="k1#0", text="mapped chat", source="chats")
    ]


# ---------------------------------------------------------------- mapping, ids, sources


def test_field_mapping_documents(tmp_path):
    rows = [
        {"uid": "u-1", "body": "first body", "text": "not this one", "source": "s"},
        {"uid": 2, "body": "second body"},
    ]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    fields = FieldMapping(text="body", id="uid")
    assert list(read_documents([path], fields=fields)) == [
        DocumentRow(id="u-1", text="first body", source="s"),
        DocumentRow(id="2", text="second body", source="mapped"),
    ]


def test_field_mapping_queries_and_source_field(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "why?", "origin": "forum"}])
    fields = FieldMapping(text="question", source="origin")
    assert list(read_queries([path], fields=fields)) == [
        QueryRow(id=QueryRow.make_id("why?"), text="why?", source="forum")
    ]


def test_mapped_text_field_missing_names_the_mapped_field(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"text": "x"}])
    error, message = error_text([path], fields=FieldMapping(text="body"))
    assert error.field == "body"
    assert "field 'body': missing (the row's fields: 'text')" in message
    assert "now 'body'" in message


def test_ids_are_stable_content_hashes(tmp_path):
    first = write_jsonl(tmp_path / "one.jsonl", [{"text": "same text"}, {"text": "other text"}])
    second = tmp_path / "two.csv"
    write_csv(second, ["text"], [["same text"]])
    read_one = list(read_documents([first]))
    read_again = list(read_documents([first]))
    from_csv = list(read_documents([second]))
    assert read_one == read_again
    assert read_one[0].id == from_csv[0].id == DocumentRow.make_id("same text")
    assert re.fullmatch(r"d-[0-9a-f]{16}", read_one[0].id)
    assert read_one[0].id != read_one[1].id
    query = next(read_queries([first]))
    assert query.id == QueryRow.make_id("same text") and query.id.startswith("q-")
    assert query.id != read_one[0].id


def test_empty_id_falls_back_to_content_hash(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"id": "", "text": "t"}, {"id": None, "text": "u"}])
    assert [d.id for d in read_documents([path])] == [DocumentRow.make_id("t"), DocumentRow.make_id("u")]


@pytest.mark.parametrize("bad_id", [1.5, ["a"], {"a": 1}, True])
def test_id_of_wrong_type_is_an_error(tmp_path, bad_id):
    path = write_jsonl(tmp_path / "x.jsonl", [{"id": bad_id, "text": "t"}])
    error, message = error_text([path])
    assert error.field == "id"
    assert "line 1" in message and "fix:" in message


@pytest.mark.parametrize(
    "name, expected",
    [
        ("my-corpus.jsonl", "my-corpus"),
        ("my-corpus.jsonl.gz", "my-corpus"),
        ("web.v2.csv", "web.v2"),
        ("Shard.PARQUET", "Shard"),
    ],
)
def test_source_defaults_to_file_name_stem(tmp_path, name, expected):
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(b'{"text": "t"}\n'))
    elif name.endswith(".csv"):
        path.write_text("text\nt\n")
    elif name.lower().endswith(".parquet"):
        pq.write_table(pa.table({"text": ["t"]}), path)
    else:
        path.write_text('{"text": "t"}\n')
    assert next(read_documents([path])).source == expected


@pytest.mark.parametrize("source", ["", "   ", None, 5])
def test_blank_or_non_string_source_falls_back_to_file_name(tmp_path, source):
    path = write_jsonl(tmp_path / "fallback.jsonl", [{"text": "t", "source": source}])
    assert next(read_documents([path])).source == "fallback"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content, location, fragments",
    [
        (b'{"text": "ok"}\n{"text": "ok"}\n{"text": "broken\n', "line 3", ["invalid JSON"]),
        (b'{"text": "ok"}\n[1, 2]\n', "line 2", ["expected a JSON object, got a JSON list"]),
        (b'"just a string"\n', "line 1", ["expected a JSON object, got a JSON str"]),
        (b'{"text": "ok"}\n{"body": "x"}\n', "line 2", ["field 'text'", "missing", "'body'", "--text-field"]),
        (b'{"text": 42}\n', "line 1", ["field 'text'", "expected a string, got int"]),
        (b'{"text": null}\n', "line 1", ["field 'text'", "expected a string, got null"]),
        (b'{"text": ["a", "b"]}\n', "line 1", ["field 'text'", "expected a string, got list"]),
        (b'{"text": {"a": 1}}\n', "line 1", ["field 'text'", "expected a string, got dict"]),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2", ["not valid UTF-8", "0xe9", "iconv"]),
    ],
    ids=["invalid-json", "array", "string", "missing-text", "int", "null", "list", "dict", "utf8"],
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


# ---------------------------------------------------------------- unicode and BOM

UNICODE_TEXTS = [
    "東京の天気はどうですか？",
    "오늘 날씨 어때요?",
    "family: 👨‍👩‍👧‍👦, flag: 🇫🇷, skin tone: 👍🏽",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם \u200fRTL mark",
    "e\u0301 (decomposed) vs \u00e9 (composed)",
    "tab\tand \u2028 line separator and \x1f unit separator",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP",
]


def test_unicode_round_trips_exactly_in_every_format(tmp_path):
    rows = [{"id": str(i), "text": t} for i, t in enumerate(UNICODE_TEXTS)]
    jsonl = write_jsonl(tmp_path / "u.jsonl", rows)
    escaped = tmp_path / "escaped.jsonl"
    escaped.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows))
    gz = tmp_path / "u.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    csv_path = write_csv(tmp_path / "u.csv", ["id", "text"], [[r["id"], r["text"]] for r in rows])
    parquet = tmp_path / "u.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "text": UNICODE_TEXTS}), parquet)
    for path in (jsonl, escaped, gz, csv_path, parquet):
        assert [d.text for d in read_documents([path])] == UNICODE_TEXTS, path.name
        assert [q.text for q in read_queries([path])] == UNICODE_TEXTS, path.name


def test_utf8_bom_is_ignored(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"id": "1", "text": "first"}, {"id": "2", "text": "\ufeffinner"}]))
    docs = list(read_documents([jsonl]))
    assert [d.text for d in docs] == ["first", "\ufeffinner"]  # only the file's first BOM goes
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbftext,id\nhello,9\n")
    assert list(read_documents([csv_path])) == [DocumentRow(id="9", text="hello", source="bom")]
    gz = tmp_path / "bom.jsonl.gz"
    gz.write_bytes(gzip.compress(b'\xef\xbb\xbf{"text": "zipped"}\n'))
    assert [d.text for d in read_documents([gz])] == ["zipped"]
