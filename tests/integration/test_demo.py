import json

from fineinstructions.config import load_config
from fineinstructions.demo import examples_dir, run_demo
from fineinstructions.excerpt import expand_excerpts
from fineinstructions.io import read_documents, read_rows
from fineinstructions.records import PairRow
from fineinstructions.tokens import load_token_counter


def test_demo_runs_end_to_end_on_the_bundled_examples(tmp_path):
    messages = []
    stats = run_demo(tmp_path, load_config("embedded"), log=messages.append)

    documents = {d.id: d for d in read_documents([examples_dir() / "documents.jsonl"])}
    rows = list(read_rows([tmp_path / "dataset"], PairRow))
    assert len(rows) == stats["pack"]["out"] > 0
    counter = load_token_counter("embedded")
    for row in rows:
        document = documents[row.document_id]
        assert row.excerpt_ratio >= 0.8
        for start, end in row.excerpt_spans:
            assert document.text[start:end] in row.answer
        assert row.text == f"Instruction: {row.instruction}\n\nAnswer: {row.answer}"
        assert row.token_count == counter.count([row.text])[0]

    # Every stage's counts balance, and every rejection is written down with its reason.
    grounding = stats["grounding"]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    failed_pairs = [r for r in rejects if r["stage"] == "grounding"]
    assert grounding["in"] == grounding["out"] + len(failed_pairs)
    assert {reason for r in failed_pairs for reason in r["reasons"]} == set(grounding["failed"])
    assert stats["templates"]["failed"]["invalid_template"] == sum(r["stage"] == "templates" for r in rejects)
    assert sum(stats["templates"]["complexity_histogram"].values()) == stats["templates"]["out"]
    assert stats["pack"]["kept_tokens"] <= stats["pack"]["budget_tokens"]
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    assert any("wrote" in m for m in messages)


def test_demo_can_run_twice_into_the_same_folder(tmp_path):
    first = run_demo(tmp_path, load_config("embedded"), log=lambda m: None)
    second = run_demo(tmp_path, load_config("embedded"), log=lambda m: None)
    assert first == second
    assert len(list((tmp_path / "dataset").glob("*.parquet"))) == 1


def test_bundled_pairs_resolve_as_the_demo_claims():
    documents = {d.id: d.text for d in read_documents([examples_dir() / "documents.jsonl"])}
    rows = [json.loads(line) for line in (examples_dir() / "pairs.jsonl").read_text().splitlines()]
    outcomes = [expand_excerpts(row["answer"], documents[row["document_id"]]) for row in rows]
    assert sum(o.ok and o.excerpt_ratio >= 0.8 for o in outcomes) == 11
