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


def test_the_experiment_end_to_end_on_a_small_slice(tmp_path):
    from test_pipeline_real import write_slice

    write_slice(tmp_path)
    out = tmp_path / "exp"
    command = [
        "experiment", "--queries", str(tmp_path / "queries.jsonl"), "--documents", str(tmp_path / "documents.jsonl"),
        "--eval-set", str(EVAL / "alpaca_eval.jsonl"), "-o", str(out), "--seq-len", "32", "--batch-size", "2",
        "--limit", "2", "--set", "evaluate.max_new_tokens=16",
        # A small bank matches little at the calibrated threshold (see test_pipeline_real).
        "--set", "match.threshold=0.15", "--set", "judge.min_relevance=null", "--set", "instantiate.shard_size=2",
    ]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "experiment.json").read_text())
    pairs, control = figures["arms"]["pairs"], figures["arms"]["control"]
    assert figures["pairs"] > 0 and figures["audit"]["passed"]
    assert pairs["corpus_tokens"] == control["corpus_tokens"]  # token for token
    assert pairs["training_tokens"] == control["training_tokens"] and pairs["steps"] == control["steps"]
    assert pairs["reference_nll"] is not None and control["reference_nll"] is not None
    assert figures["head_to_head"]["items"] == 2
    # The evaluation set's prompts were protected from the queries.
    assert (out / "protected" / "alpaca_eval.txt").exists()
    assert str(out / "protected" / "alpaca_eval.txt") in json.loads((out / "run" / "run.json").read_text())["config"]
    report = (out / "report.html").read_text()
    assert "says nothing about what the method is worth" in report and report.count("<svg") == 2
    # Run again: every step is found done.
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "experiment.json").read_text()) == figures
