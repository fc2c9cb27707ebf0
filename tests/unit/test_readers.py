"""Readers: JSONL, JSONL.gz, CSV, Parquet and folders in; QueryRow / DocumentRow out."""

from __future__ import annotations

import gzip
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.io import FieldMapping, ReadStats, input_files, read_documents, read_queries
from fineinstructions.records import DocumentRow, QueryRow
from support.readers import (
    EXPECTED_DOCS,
    ROWS,
    error_text,
    jsonl_bytes,
    write_csv,
    write_jsonl,
)

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
