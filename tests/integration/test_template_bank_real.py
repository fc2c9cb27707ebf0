"""A template bank in another schema, indexed with the real embedded embedder, matches real
documents from ../shared/data exactly as the same templates in this package's own bank do;
and `run --templates` takes it through the whole pipeline with the embedded models."""

import csv
import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main
from fineinstructions.io import ShardWriter, read_documents, read_rows
from fineinstructions.records import MatchRow, PairRow, TemplateRow
from support.data import BANK, DOCUMENTS
from support.float_noise import up_to_float_noise

pytestmark = pytest.mark.slow

RENAMED = ["--template-field", "pattern", "--description-field", "doc_kind"]


def foreign_bank(folder):
    """BANK as a team might keep it: renamed fields, no ids, half in CSV and half in
    Parquet, with two broken templates and a repeat."""
    folder.mkdir()
    rows = [(template, description) for template, description, _ in BANK]
    with open(folder / "a.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pattern", "doc_kind"])
        writer.writerows(rows[:6])
        writer.writerow(["What is <fi>a thing?", "A page about things."])  # unclosed tag
        writer.writerow(rows[0])  # a repeat
    rest = rows[6:] + [("Tell me about dogs.", "A page about dogs.")]  # no variables
    pq.write_table(pa.table({"pattern": [r[0] for r in rest], "doc_kind": [r[1] for r in rest]}), folder / "b.parquet")
    return folder


def native_bank(folder):
    """BANK in this package's own schema, as `templatize` writes a bank."""
    with ShardWriter(folder, TemplateRow) as writer:
        writer.write(
            TemplateRow(id=TemplateRow.make_id(t, d), query_id=f"q{i}", source="test", template=t,
                        compatible_document_description=d, variables=(), complexity=c, model="hand-written",
                        prompt_version="test")
            for i, (t, d, c) in enumerate(BANK)
        )
    return folder


def news_sample(tmp_path, count):
    documents = [d for d in read_documents([DOCUMENTS]) if d.source in ("cnn-dailymail", "xsum-bbc")][:count]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text, "source": d.source}) + "\n" for d in documents))
    return path


def test_a_foreign_bank_matches_real_documents_as_the_native_one_does(tmp_path):
    runner = CliRunner()
    bank = native_bank(tmp_path / "ours")
    theirs = foreign_bank(tmp_path / "theirs")
    result = runner.invoke(main, ["index", str(theirs), "-o", str(tmp_path / "i-theirs"), *RENAMED])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "i-theirs" / "stats.json").read_text())["index"]
    assert stats["out"] == len(BANK)
    assert stats["skipped"] == {"unclosed_tag": 1, "no_variables": 1, "duplicate": 1}
    assert runner.invoke(main, ["index", str(bank), "-o", str(tmp_path / "i-ours")]).exit_code == 0

    sample = news_sample(tmp_path, 10)
    for name in ("theirs", "ours"):
        result = runner.invoke(main, ["match", str(sample), "--index", str(tmp_path / f"i-{name}"),
                                      "-o", str(tmp_path / f"m-{name}"), "--threshold", "0.2"])
        assert result.exit_code == 0, result.output
    matches = list(read_rows([tmp_path / "m-theirs"], MatchRow))
    native = list(read_rows([tmp_path / "m-ours"], MatchRow))
    # The same matches; only the query ids differ (the foreign bank names no query).
    # (The two banks embed their descriptions in other batches, so scores may differ by
    # float noise; the templates matched may not.)
    assert matches and [dataclasses.asdict(m) for m in matches] == up_to_float_noise(
        [dataclasses.asdict(dataclasses.replace(m, query_id="")) for m in native])
    assert all(m.query_id for m in native)
    # Ids are content hashes, as templatize gives them; the rows carry the template text.
    by_id = {t.id: t for t in read_rows([bank], TemplateRow)}
    assert all(m.template == by_id[m.template_id].template and m.variables for m in matches)


def test_run_with_a_bank_instead_of_queries(tmp_path):
    theirs = foreign_bank(tmp_path / "theirs")
    sample = news_sample(tmp_path, 2)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", "--templates", str(theirs), "--documents", str(sample), "-o", str(out), *RENAMED, "--quiet",
        # A low threshold, so this 12-template bank gives the later stages work; the
        # relevance gate is tested on its own (test_quality_real.py).
        "--set", "match.threshold=0.2", "--set", "judge.min_relevance=null", "--set", "instantiate.shard_size=1",
    ])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert "templatize" not in stats["stages"] and not (out / "templates").exists()
    assert stats["stages"]["index"]["out"] == len(BANK)
    funnel = stats["funnel"]
    assert funnel["documents"] == 2 and funnel["matches"] > 0
    assert funnel["matches"] == stats["stages"]["instantiate"]["in"]
    ids = {TemplateRow.make_id(template, description) for template, description, _ in BANK}
    pairs = list(read_rows([out / "pairs"], PairRow))
    assert all(p.template_id in ids for p in pairs)
    assert json.loads((out / "run.json").read_text())["templates"] == [str(theirs.resolve())]
