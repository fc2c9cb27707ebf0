"""The audit: a hand-made dataset with one planted defect per rule; each is caught, and
the clean rows pass."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from fineinstructions.config import load_config
from fineinstructions.experiments.audit import run_audit
from fineinstructions.experiments.audit_rules import personal_data
from fineinstructions.interface.cli import main
from fineinstructions.io import ShardWriter
from fineinstructions.records import PairRow
from fineinstructions.text.packing import format_pair
from support.audit_rows import CLEAN, DOCUMENTS, PROTECTED, pair


def planted():
    """One defect per rule, each on its own row."""
    base = pair("x", "bread", "How do I feed a sourdough starter?",
                ["Feed the starter with flour and water the night before baking."], template="t-4")
    (start, end), = base.excerpt_spans
    spans = dataclasses.replace(base, id="d-spans", excerpt_spans=((start + 1, end + 1),))  # not the answer's text
    ratio = dataclasses.replace(base, id="d-ratio", excerpt_ratio=0.5)
    markup = dataclasses.replace(base, id="d-markup", answer=base.answer + " <fi>x</fi>")
    markup = dataclasses.replace(markup, text=format_pair(markup.instruction, markup.answer),
                                 excerpt_ratio=base.excerpt_ratio * len(base.answer) / len(markup.answer))
    text = dataclasses.replace(base, id="d-format", text="Q: " + base.instruction)
    score = dataclasses.replace(base, id="d-score", judge_expected_score=2.2, judge_score=2)
    repeated = dataclasses.replace(CLEAN[0], instruction="How do I bake sourdough bread in a covered pot?",
                                   text=format_pair("How do I bake sourdough bread in a covered pot?", CLEAN[0].answer))
    off_topic = pair("s-relevance", "bikes", "What wine goes with grilled salmon?",
                     ["A bicycle chain wears out slowly."], template="t-5")
    contaminated = pair("s-contamination", "garden", "How often should tomato plants be watered in summer?",
                        ["Water tomato plants deeply twice a week rather than a little every day."], template="t-6")
    personal = pair("s-personal", "contact", "Where do questions about the seed catalogue go?",
                    ["Questions about the tomato seed catalogue go to orders@seedhouse.example.org or call 212-555-0187 "
                     "between nine and five."], template="t-7")
    near = dataclasses.replace(CLEAN[1], id="s-near", instruction="When should I replace my bicycle chain?!",
                               text=format_pair("When should I replace my bicycle chain?!", CLEAN[1].answer))
    return [spans, ratio, markup, text, score, repeated, off_topic, contaminated, personal, near]


class WordsEmbedder:
    """A stand-in: bag of words hashed into 512 dimensions, L2-normalised."""

    def embed(self, texts):
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace("?", " ").replace(".", " ").split():
                out[row, int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % 512] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def write(folder, rows, tmp_path):
    with ShardWriter(folder, PairRow, rows_per_shard=5, prefix="part") as writer:
        writer.write(rows)
    documents = tmp_path / "documents.jsonl"
    documents.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCUMENTS.items()))
    protected = tmp_path / "mt_bench_like.jsonl"
    protected.write_text(json.dumps(PROTECTED) + "\n")
    return documents, protected


def audit(tmp_path, rows, **options):
    documents, protected = write(tmp_path / "dataset", rows, tmp_path)
    return run_audit(tmp_path / "dataset", [documents], load_config(), protected=[protected], embedder=WordsEmbedder(),
                     min_relevance=0.1, log=lambda m: None, **options)


def test_clean_rows_pass_every_rule(tmp_path):
    result = audit(tmp_path, CLEAN)
    assert result["passed"] and result["pairs"] == 3 and result["documents"] == 4
    assert {name: rule["failed"] for name, rule in result["rules"].items()} == dict.fromkeys(result["rules"], 0)
    diversity = result["rules"]["diversity"]
    assert diversity["distinct_templates"] == 3 and diversity["largest_template_share"] == pytest.approx(1 / 3, abs=1e-5)
    assert json.loads((tmp_path / "dataset" / "audit.json").read_text())["passed"] is True


def test_every_planted_defect_is_caught_by_its_rule(tmp_path):
    result = audit(tmp_path, CLEAN + planted(), examples=20)
    flagged = {name: sorted(e.get("pair_id", "") for e in rule["examples"]) for name, rule in result["rules"].items()}
    assert not result["passed"]
    assert result["failed_hard_rules"] == ["spans", "excerpt_ratio", "markup", "format", "judge_score", "ids"]
    assert flagged["spans"] == ["d-spans"] and flagged["excerpt_ratio"] == ["d-ratio"]
    assert flagged["markup"] == ["d-markup"] and flagged["format"] == ["d-format"] and flagged["judge_score"] == ["d-score"]
    assert result["rules"]["ids"]["failed"] == 1  # p-1 twice
    assert flagged["relevance"] == ["s-relevance"]
    assert flagged["contamination"] == ["s-contamination"]
    assert flagged["personal_data"] == ["s-personal"]
    assert result["rules"]["personal_data"]["found"] == {"phone": 1, "email": 1}
    assert {"s-near", "p-1"} <= set(flagged["near_duplicates"])


def test_personal_data_is_found_by_the_libraries():
    found = list(personal_data("Mail ann.lee@example.com, call +44 20 7946 0958 or (212) 555-0187; server 203.0.113.9."))
    assert ("email", "ann.lee@example.com") in found and ("ip_address", "203.0.113.9") in found
    assert sum(kind == "phone" for kind, _ in found) == 2
    assert not list(personal_data("Version 1.2.3 of the app costs 12.50, ships in 2 days; write to us at the shop."))


def test_the_command_exits_1_when_a_hard_rule_fails(tmp_path, monkeypatch):
    documents, protected = write(tmp_path / "dataset", CLEAN + planted()[:1], tmp_path)
    result = CliRunner().invoke(main, ["audit", str(tmp_path / "dataset"), "--documents", str(documents),
                                       "--no-relevance", "-o", str(tmp_path / "audit.json")])
    assert result.exit_code == 1, result.output
    assert "FAILED (spans)" in result.output and "d-spans" in result.output
    assert json.loads((tmp_path / "audit.json").read_text())["failed_hard_rules"] == ["spans"]
