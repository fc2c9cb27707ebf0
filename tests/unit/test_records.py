import dataclasses

import pytest

from fineinstructions.records import (
    ROW_TYPES,
    DocumentRow,
    MatchRow,
    PairRow,
    QueryRow,
    TemplateRow,
    content_id,
    from_table,
    row_from_dict,
    row_to_dict,
    to_table,
)


def test_content_ids_are_stable_across_versions_and_processes():
    # Pinned: changing the hash would silently re-key every existing output.
    assert content_id("q", "calories in a wrap") == "q-e6a192a7ddd84927"
    assert QueryRow.make_id("calories in a wrap") == "q-e6a192a7ddd84927"


def test_content_ids_separate_their_parts():
    assert content_id("t", "ab", "c") != content_id("t", "a", "bc")
    assert content_id("t", "x") != content_id("d", "x")
    assert DocumentRow.make_id("same text") != QueryRow.make_id("same text")


@pytest.mark.parametrize("row_type", ROW_TYPES)
def test_schema_names_every_field_in_order(row_type):
    assert row_type.SCHEMA.names == [f.name for f in dataclasses.fields(row_type)]


EXAMPLES = [
    QueryRow(id="q1", text="how do tides work? 🌊", source="examples"),
    DocumentRow(id="d1", text="Tides are caused by…", source="web", token_count=5),
    DocumentRow(id="d2", text="no count yet", source="web"),
    TemplateRow(
        id="t1",
        query_id="q1",
        source="examples",
        template="how do <fi>natural phenomenon</fi> work?",
        compatible_document_description="An explanation of a natural phenomenon.",
        variables=("natural phenomenon",),
        complexity=1,
        model="m",
        prompt_version="templatize-v1",
    ),
    MatchRow(document_id="d1", template_id="t1", chunk=3, score=0.875),
    PairRow(
        id="p1",
        document_id="d1",
        template_id="t1",
        query_id="q1",
        instruction="How do tides work?",
        answer="Tides are caused by…",
        excerpt_ratio=1.0,
        excerpt_spans=((0, 20), (3, 9)),
        judge_score=5,
        text="Instruction: How do tides work?\n\nAnswer: Tides are caused by…",
        token_count=17,
    ),
]


@pytest.mark.parametrize("row", EXAMPLES, ids=lambda r: type(r).__name__)
def test_rows_round_trip_through_arrow(row):
    table = to_table([row])
    assert table.schema == type(row).SCHEMA
    assert from_table(table, type(row)) == [row]


def test_empty_batch_needs_its_type():
    assert to_table([], MatchRow).num_rows == 0
    with pytest.raises(ValueError):
        to_table([])


def test_dicts_hold_lists_not_tuples():
    pair = EXAMPLES[-1]
    assert row_to_dict(pair)["excerpt_spans"] == [[0, 20], [3, 9]]
    assert row_from_dict(PairRow, row_to_dict(pair)) == pair


def test_unknown_fields_are_rejected():
    with pytest.raises(ValueError, match="no field"):
        row_from_dict(QueryRow, {"id": "q", "text": "t", "source": "s", "extra": 1})


def test_rows_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXAMPLES[0].text = "changed"
