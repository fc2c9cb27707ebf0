"""The relevance gate means the same whatever made the pairs: pairs without a relevance
score (another tool's, an older run's) are scored by the judge stage with the run's
embedder, so an answer unrelated to its instruction is dropped before the judge."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main
from fineinstructions.io import ShardWriter, read_rows
from fineinstructions.records import PairRow

pytestmark = pytest.mark.slow

CACTUS = ("Repot a cactus by wrapping it in folded newspaper, lifting it out of the old pot, and setting it "
          "in dry, gritty soil; wait a week before watering so that damaged roots can heal.")


def pair(pair_id: str, instruction: str) -> PairRow:
    return PairRow(id=pair_id, document_id="d1", template_id="t1", query_id="q1", instruction=instruction,
                   answer=CACTUS, excerpt_ratio=1.0, excerpt_spans=((0, len(CACTUS)),))


def test_pairs_without_relevance_are_scored_before_the_gate(tmp_path):
    pairs = tmp_path / "pairs"
    with ShardWriter(pairs, PairRow) as writer:
        writer.write([
            pair("relevant", "How do I repot a cactus without hurting its roots?"),
            pair("unrelated", "What were the main causes of the French Revolution of 1789?"),
        ])
    out = tmp_path / "judged"
    result = CliRunner().invoke(main, ["judge", str(pairs), "-o", str(out), "--set", "judge.min_relevance=0.45"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())["judge"]
    assert stats["unscored_relevance"] == 0 and stats["relevance_scored"] == 2
    assert stats["skipped"].get("irrelevant_answer") == 1
    rejects = [json.loads(line) for line in (tmp_path / "judged.rejects.jsonl").read_text().splitlines()]
    irrelevant = [r for r in rejects if r["reason"] == "irrelevant_answer"]
    assert [r["input_id"] for r in irrelevant] == ["unrelated"]
    kept = list(read_rows([out], PairRow)) if any(out.glob("part-*")) else []
    assert all(p.relevance is not None and p.relevance >= 0.45 for p in kept)
