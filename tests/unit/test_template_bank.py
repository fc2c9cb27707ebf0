"""Bring your own template bank: any schema, checked with the pipeline's rules, counted by
reason, deduplicated, and built resumably."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineinstructions.config import load_config
from fineinstructions.errors import InputError
from fineinstructions.execution.index import run_index
from fineinstructions.models.index import TemplateIndex
from fineinstructions.records import TemplateRow
from fineinstructions.text.template import parse_template
from support.embedders import CountingEmbedder, write_bank

QUIET = {"show_progress": False, "log": lambda message: None}
# A team's bank: its own field names, ids on some rows, a stale complexity column.
FIELDS = ["input.templates.template_field=pattern", "input.templates.description_field=doc_kind",
          "input.templates.id_field=uid", "input.templates.query_field=asked"]
REPOT = ("How do I repot a <fi>houseplant</fi> without harming its roots?",
         "A gardening guide on moving a plant to a bigger pot.")
COMPARE = ("What is the difference between <fi>first thing</fi> and <fi>second thing</fi>?",
           "An explainer comparing two related ideas side by side.")
POEM = ("Write a short <fi>kind of poem</fi> about <fi>a season</fi>.", "A poem or essay about weather and nature.")
CSV_ROWS = [
    # pattern, doc_kind, uid, complexity (stale: the bank's own guess, never used)
    (*REPOT, "team-1", "7"),
    (*COMPARE, "", "7"),
    (*POEM, "", "7"),
    ("How do I fix a <fi>broken appliance at home?", "A repair manual for household machines.", "", "1"),  # unclosed_tag
    ("Why is the sky blue?", "A science article about light scattering.", "", "0"),  # no_variables
    ("Summarise <fi>a report</fi> in three lines.", "", "", "1"),  # empty_description
    ("", "A cooking blog.", "", "1"),  # empty_template
    ("Explain <fi>topic</fi> simply", "explain topic simply", "", "1"),  # description_repeats_template
    (*COMPARE, "", "7"),  # the same template again: duplicate
    ("Plan a trip to <fi>a city</fi>.", "A travel guide to a city.", "team-1", "1"),  # another template, id taken
]
PARQUET_ROWS = {
    "pattern": [REPOT[0], "How long does a Toyota <fi>car model</fi> last?",
                "How long should I boil <fi>a vegetable</fi>?"],
    "doc_kind": [REPOT[1], "A buyer's guide with the lifespans of cars.", "A recipe page with cooking times."],
    "asked": [None, "How long does a Toyota Corolla last?", "How long should I boil broccoli?"],
}


def team_bank(folder):
    folder.mkdir()
    with open(folder / "curated.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pattern", "doc_kind", "uid", "complexity"])
        writer.writerows(CSV_ROWS)
    pq.write_table(pa.table(PARQUET_ROWS), folder / "mined.parquet")
    return folder


def indexed(index_dir):
    return pq.read_table(index_dir / "templates.parquet").to_pylist()


def test_a_bank_in_another_schema_indexes_with_counts_by_reason(tmp_path):
    bank = team_bank(tmp_path / "bank")
    config = load_config(overrides=FIELDS)
    stats = run_index([bank], tmp_path / "index", config, embedder=CountingEmbedder(), **QUIET)["index"]

    expected_skips = {"unclosed_tag": 1, "no_variables": 1, "empty_description": 1, "empty_template": 1,
                      "description_repeats_template": 1, "duplicate": 2, "duplicate_id": 1, "leftover_name": 1}
    assert stats["skipped"] == expected_skips
    assert stats["in"] == len(CSV_ROWS) + 3 and stats["out"] == 4
    assert stats["in"] == stats["out"] + sum(stats["skipped"].values()) + sum(stats["failed"].values())
    rejects = [json.loads(line) for line in (tmp_path / "index.rejects.jsonl").read_text().splitlines()]
    assert Counter(r["reason"] for r in rejects) == Counter(expected_skips)
    unclosed = next(r for r in rejects if r["reason"] == "unclosed_tag")
    assert "curated.csv" in unclosed["detail"] and unclosed["input"].startswith("How do I fix")
    # The copy of REPOT in the Parquet file (another shard) is the one dropped.
    assert any(r["reason"] == "duplicate" and r["input"] == REPOT[0] for r in rejects)

    rows = {row["template"]: row for row in indexed(tmp_path / "index")}
    assert set(rows) == {REPOT[0], COMPARE[0], POEM[0], "How long should I boil <fi>a vegetable</fi>?"}
    assert rows[REPOT[0]]["id"] == "team-1"  # a given id is kept
    assert rows[COMPARE[0]]["id"] == TemplateRow.make_id(*COMPARE)  # a missing one is the content hash
    for template, row in rows.items():  # variables and complexity computed here, not read
        parsed = parse_template(template)
        assert row["variables"] == list(parsed.variables) and row["complexity"] == parsed.complexity != 7
    boil = rows["How long should I boil <fi>a vegetable</fi>?"]
    assert boil["query_id"].startswith("q-")  # made from the query the bank names
    index = TemplateIndex.load(tmp_path / "index")
    assert len(index) == 4 and sorted(index.ids) == sorted(row["id"] for row in rows.values())


def test_this_packages_bank_and_a_foreign_one_merge_with_repeats_once(tmp_path):
    ours = write_bank(tmp_path / "ours", 6)  # this package's schema: id, query_id, template, ...
    theirs = tmp_path / "theirs.jsonl"
    copy = {"template": "what is <fi>thing 2</fi>", "compatible_document_description": "a page about thing 2"}
    new = {"template": "how big is <fi>a planet</fi>", "compatible_document_description": "an astronomy fact sheet"}
    theirs.write_text(json.dumps(copy) + "\n" + json.dumps(new) + "\n")
    stats = run_index([ours, theirs], tmp_path / "index", load_config(), embedder=CountingEmbedder(), **QUIET)["index"]
    assert stats["out"] == 7 and stats["skipped"] == {"duplicate": 1}
    ids = {row["id"] for row in indexed(tmp_path / "index")}
    assert "t2" in ids and TemplateRow.make_id(new["template"], new["compatible_document_description"]) in ids


def test_a_row_outside_the_schema_names_file_row_field_and_fix(tmp_path):
    bank = team_bank(tmp_path / "bank")
    with pytest.raises(InputError) as error:  # the default field names are not this bank's
        run_index([bank / "curated.csv"], tmp_path / "index", load_config(), embedder=CountingEmbedder(), **QUIET)
    message = str(error.value)
    assert "curated.csv" in message and "'template'" in message and "--template-field" in message
    # With on_error=skip the row is counted and kept in the rejects, and nothing valid is lost.
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"pattern": REPOT[0], "doc_kind": REPOT[1]}) + "\n" + json.dumps({"doc_kind": "x"}) + "\n")
    config = load_config(overrides=[*FIELDS, "input.on_error=skip"])
    stats = run_index([mixed], tmp_path / "index2", config, embedder=CountingEmbedder(), **QUIET)["index"]
    assert stats["out"] == 1 and stats["skipped"] == {"invalid_row": 1}


class FailingEmbedder(CountingEmbedder):
    """Dies (as a killed build would) when asked to embed its ``fail_at``-th batch."""

    def __init__(self, fail_at):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def embed(self, texts):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().embed(texts)


def test_a_killed_build_resumes_from_its_last_committed_shard(tmp_path):
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(
        json.dumps({"template": f"how tall is <fi>tower {i}</fi>", "compatible_document_description": f"a page about tower {i}"}) + "\n"
        for i in range(20)
    ))
    config = load_config(overrides=["index.shard_size=5", "index.batch_size=5"])  # 4 shards, one batch each
    with pytest.raises(KeyboardInterrupt):
        run_index([bank], tmp_path / "index", config, embedder=FailingEmbedder(fail_at=3), **QUIET)
    assert not (tmp_path / "index" / "index.json").exists()
    said, again = [], CountingEmbedder()
    stats = run_index([bank], tmp_path / "index", config, embedder=again, show_progress=False, log=said.append)
    assert again.embedded == 10  # only the two shards the killed build had not committed
    assert any("resuming: 2 of 4 shards were done" in line for line in said)
    clean = run_index([bank], tmp_path / "clean", config, embedder=CountingEmbedder(), **QUIET)
    assert stats["index"]["out"] == clean["index"]["out"] == 20
    assert [r["id"] for r in indexed(tmp_path / "index")] == [r["id"] for r in indexed(tmp_path / "clean")]
    a, b = TemplateIndex.load(tmp_path / "index"), TemplateIndex.load(tmp_path / "clean")
    probe = np.eye(a.identity.dimension, dtype=np.float32)[:3]
    assert np.array_equal(a.search(probe, 5)[1], b.search(probe, 5)[1])


def test_a_bank_at_an_fsspec_url_is_read_without_a_local_copy(tmp_path):
    import fsspec

    rows = [{"pattern": t, "doc_kind": d} for t, d in (REPOT, COMPARE, POEM)]
    with fsspec.open("memory://team/bank/part-0.jsonl", "w") as handle:  # a stand-in for hf:// or s3://
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    try:
        stats = run_index(["memory://team/bank"], tmp_path / "index", load_config(overrides=FIELDS),
                          embedder=CountingEmbedder(), **QUIET)["index"]
    finally:
        fsspec.filesystem("memory").rm("/team", recursive=True)
    assert stats["out"] == 3 and stats["skipped"] == {}


def test_a_run_without_a_bank_keeps_the_fingerprint_it_had_before_banks_existed():
    from fineinstructions.execution.pipeline import run_fingerprint

    config = load_config(overrides=["evaluate.max_new_tokens=7"])
    plain = run_fingerprint(config, bank=False)
    assert "templates" not in plain["input"] and "evaluate" not in plain  # so older runs still resume
    assert run_fingerprint(config, bank=True)["input"]["templates"]["template_field"] == "template"
    assert run_fingerprint(load_config(overrides=FIELDS), bank=False) == plain  # bank fields matter with a bank only
