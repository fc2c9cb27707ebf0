"""The whole pipeline with the real embedded models (SmolLM2-135M through llama.cpp,
all-MiniLM-L6-v2) on real data from ../shared/data and on the bundled demo, including a
run killed with SIGKILL and resumed."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fineinstructions.config import load_config
from fineinstructions.execution.pipeline import run_pipeline
from fineinstructions.interface.report import write_report
from fineinstructions.io import read_documents, read_rows
from fineinstructions.records import PairRow, TemplateRow
from fineinstructions.stages.instantiate import Instantiator
from fineinstructions.text.excerpt import expand_excerpts
from fineinstructions.text.instantiate_grammar import document_grammar, excerpt_anchors
from support.data import real_documents, write_slice

pytestmark = pytest.mark.slow

EXECUTABLE = str(Path(sys.executable).with_name("fineinstructions"))


def balanced(step: dict) -> bool:
    return step["in"] == step["out"] + sum(step.get("skipped", {}).values()) + sum(step.get("failed", {}).values())


def test_the_document_grammar_compiles_and_admits_only_real_excerpts(llm):
    decoder = llm._decoder
    for document in real_documents(3):
        grammar = document_grammar(document.text, "what does <fi>the subject</fi> say")
        anchors = [a for a in excerpt_anchors(document.text) if a.prefix and a.suffix]
        good = json.dumps({"instruction": "what does the page say", "answer": f"<excerpt>{anchors[0].prefix}<...>{anchors[0].suffix}</excerpt>"})
        invented = json.dumps({"instruction": "what does the page say", "answer": "<excerpt>Nothing like this<...>appears there.</excerpt>"})
        loose = json.dumps({"instruction": "what does the document say about it all", "answer": f"<excerpt>{anchors[0].prefix}<...>{anchors[0].suffix}</excerpt>"})
        assert decoder.accepts(grammar, good)
        assert decoder.accepts(grammar, "null")
        assert not decoder.accepts(grammar, invented)
        assert not decoder.accepts(grammar, loose)  # the instruction must be the template filled in


def test_with_the_grammar_every_marker_the_real_model_writes_resolves(llm):
    documents = real_documents(4)
    templates = [
        TemplateRow(id=f"t{i}", query_id=f"q{i}", source="s", template=text, compatible_document_description="d",
                    variables=(), complexity=1, model="m", prompt_version="v")
        for i, text in enumerate(["what is <fi>a topic</fi> about", "summarize what the text says about <fi>a subject</fi>"])
    ]
    stage = Instantiator(llm, constraint="document", context_window=4096, max_excerpts=2)
    llm.llama.reset()
    result = stage([(d, templates) for d in documents])
    assert result.requests == 8
    assert result.markers > 0 and result.unresolved_markers == 0 and result.ambiguous_markers == 0
    assert result.cached_tokens > 0  # the second template of each document reuses its prefix
    texts = {d.id: d.text for d in documents}
    for pair in result.pairs:
        assert pair.excerpt_ratio >= 0.8
        for start, end in pair.excerpt_spans:
            assert texts[pair.document_id][start:end] in pair.answer


def test_run_end_to_end_on_real_queries_and_documents(tmp_path):
    documents = write_slice(tmp_path)
    # A small bank matches little at the calibrated threshold; a low one gives the later stages
    # work. Its pairs rarely answer their instructions, and the relevance gate rightly drops
    # them (tests/integration/test_quality_real.py tests it); here some must reach the dataset.
    config = load_config(
        "embedded", overrides=["match.threshold=0.15", "instantiate.shard_size=2", "judge.min_relevance=null"]
    )
    out = tmp_path / "run"
    messages = []
    stats = run_pipeline([tmp_path / "queries.jsonl"], [tmp_path / "documents.jsonl"], out, config,
                         show_progress=False, report=write_report, log=messages.append)
    stages, funnel = stats["stages"], stats["funnel"]
    for name in ("templatize", "index", "match", "instantiate", "judge", "pack"):
        assert balanced(stages[name]), (name, stages[name])
    assert funnel["documents"] == 4 and funnel["matches"] > 0
    assert stages["instantiate"]["in"] == funnel["matches"]
    assert funnel["matches"] >= funnel["instantiated"] >= funnel["grounded"] >= funnel["judged_kept"] >= funnel["packed"]
    assert stages["instantiate"]["unresolved_markers"] == 0
    assert stages["instantiate"]["cached_prompt_tokens"] > 0
    judge = stages["judge"]
    assert sum(judge["score_histogram"].values()) + judge["failed"].get("unparseable_judgement", 0) + judge["skipped"].get("irrelevant_answer", 0) == judge["in"]

    texts = {d.id: d.text for d in documents}
    rows = list(read_rows([out / "dataset"], PairRow))
    assert len(rows) == funnel["packed"]
    for row in rows:
        assert row.judge_score >= 4 and row.excerpt_ratio >= 0.8
        assert row.text == f"Instruction: {row.instruction}\n\nAnswer: {row.answer}"
        assert row.token_count and row.instantiate_prompt_version == "instantiate-v1" and row.judge_prompt_version == "judge-v1"
        for start, end in row.excerpt_spans:
            assert texts[row.document_id][start:end] in row.answer
    assert json.loads((out / "stats.json").read_text())["funnel"] == funnel
    assert "# Grounded instruction" in (out / "dataset" / "README.md").read_text()
    report = (out / "report.html").read_text()
    for title in ("Template complexity", "Matches per document", "Excerpt ratio", "Judge scores", "Distinct templates"):
        assert title in report
    assert report.count("<svg") >= 4
    for subfolder in ("templates", "index", "matches", "pairs", "judged", "dataset"):
        assert (out / subfolder / "stats.json").exists()

    # The same command again finds everything finished and calls no model.
    again = run_pipeline([tmp_path / "queries.jsonl"], [tmp_path / "documents.jsonl"], out, config,
                         show_progress=False, log=messages.append)
    assert again["funnel"] == funnel
    assert again["stages"]["instantiate"]["model_calls"] == stages["instantiate"]["model_calls"]
    assert again["stage_seconds_this_run"] == {}  # every stage finished: none ran again


def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as db:
        return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


def _finished_inputs(shards: Path) -> int:
    return sum(json.loads(p.read_text())["counts"].get("in", 0) for p in shards.glob("[0-9]*.json")) if shards.exists() else 0


def _demo(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [EXECUTABLE, "demo", "-o", str(out), "--set", "instantiate.shard_size=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_a_run_killed_mid_stage_resumes_to_the_uninterrupted_output(tmp_path):
    whole = tmp_path / "whole"
    process = _demo(whole)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    assert f"report: {whole / 'report.html'}" in output

    killed = tmp_path / "killed"
    process = _demo(killed)
    cache, shards = killed / "pairs.cache.sqlite", killed / "pairs" / ".shards"
    deadline = time.monotonic() + 900
    # Kill it (SIGKILL: no clean-up) while a shard is half done: some of its model calls
    # completed (in the cache), its marker not yet written.
    while time.monotonic() < deadline and process.poll() is None:
        if _cache_rows(cache) > _finished_inputs(shards) and _finished_inputs(shards) > 0:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-stage"
    assert not (killed / "stats.json").exists()

    process = _demo(killed)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    assert "[templates] finished in an earlier run; kept" in output
    resumed = re.search(r"instantiate: resuming: (\d+) of \d+ shards were done", output)
    assert resumed and int(resumed.group(1)) >= 1, output

    def rows(run: Path, folder: str) -> list[tuple]:
        found = sorted(read_rows([run / folder], PairRow), key=lambda p: p.id)
        return [(p.id, p.instruction, p.answer, p.excerpt_spans, p.judge_score, p.token_count) for p in found]

    assert rows(killed, "pairs") == rows(whole, "pairs")
    assert rows(killed, "dataset") == rows(whole, "dataset")
    first, second = (json.loads((run / "stats.json").read_text()) for run in (whole, killed))
    assert second["funnel"] == first["funnel"]
    inst_first, inst_second = first["stages"]["instantiate"], second["stages"]["instantiate"]
    # No model call was made twice: every request reached the model once over both
    # processes, and the ones that completed before the kill came from the cache.
    assert inst_second["cache_hits"] >= 1
    assert inst_second["model_calls"] + inst_second["cache_hits"] == inst_first["model_calls"] == inst_first["in"]
    assert _cache_rows(cache) == _cache_rows(whole / "pairs.cache.sqlite")
    # The rejects of the killed shard are written once, not twice.
    for name in ("pairs.rejects.jsonl", "judged.rejects.jsonl"):
        assert (killed / name).read_text().count("\n") == (whole / name).read_text().count("\n")


def test_expanded_answers_in_the_demo_quote_the_documents(tmp_path):
    """The bundled documents are what the demo's pairs quote (a quick check of the examples)."""
    from fineinstructions.interface.demo import examples_dir

    documents = list(read_documents([examples_dir() / "documents.jsonl"]))
    assert 4 <= len(documents) <= 10
    for document in documents:
        anchors = [a for a in excerpt_anchors(document.text) if a.prefix and a.suffix]
        assert anchors
        assert expand_excerpts(f"<excerpt>{anchors[0].prefix}<...>{anchors[-1].suffix}</excerpt>", document.text).ok
