"""The experiments layer with the real embedded models: two tiny models pre-trained on an
exported dataset, evaluated on real MT-Bench questions with the embedded SmolLM2 as the
judge."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main

pytestmark = pytest.mark.slow
EVAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"


def test_evaluate_two_tiny_models_with_the_embedded_judge(tmp_path):
    from test_audit import CLEAN

    from fineinstructions.io import ShardWriter
    from fineinstructions.records import PairRow

    with ShardWriter(tmp_path / "dataset", PairRow) as writer:
        writer.write(CLEAN)
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(tmp_path / "dataset"), "--format", "tokens", "-o", str(tmp_path / "tokens"),
                                  "--tokenizer", "embedded"])
    assert result.exit_code == 0, result.output
    for seed in ("1", "2"):
        result = runner.invoke(main, ["pretrain", str(tmp_path / "tokens"), "-o", str(tmp_path / f"m{seed}"), "--seq-len", "32",
                                      "--batch-size", "2", "--tokens", "640", "--seed", seed, "--loss", "all", "-q"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", str(tmp_path / "m1"), str(tmp_path / "m2"), "--eval-set",
                                  str(EVAL / "mt_bench.jsonl"), "--limit", "2", "-o", str(tmp_path / "eval"),
                                  "--set", "evaluate.max_new_tokens=16"])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert figures["items"] == 2 and set(figures["models"]) == {str(tmp_path / "m1"), str(tmp_path / "m2")}
    judgements = [json.loads(line) for line in (tmp_path / "eval" / "judgements.jsonl").read_text().splitlines()]
    assert len(judgements) == 2 * 2 + 2 * 2  # two grades per model, two orders per item
    # The embedded judge is constrained to the JSON schema: every judgement parses.
    assert all(j.get("score") is not None or j.get("verdict") is not None for j in judgements)
    assert figures["head_to_head"]["items"] == 2 and 0 <= figures["head_to_head"]["win_rate"] <= 1
