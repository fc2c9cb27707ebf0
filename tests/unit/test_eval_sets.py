"""Evaluation sets in their own formats: the real AlpacaEval and MT-Bench copies in
../shared/data/eval, plain prompts, and rows that fit no format."""

import json
from pathlib import Path

import pytest

from fineinstructions.errors import InputError
from fineinstructions.experiments.eval_sets import read_eval_set

EVAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"


def test_mt_bench_rows_keep_both_turns_and_their_references():
    items = read_eval_set(EVAL / "mt_bench.jsonl")
    assert len(items) == 80 and all(len(item.turns) == 2 for item in items)
    with_references = [item for item in items if item.references]
    assert len(with_references) == 30 and all(len(item.references) == 2 for item in with_references)
    assert {item.set_name for item in items} == {"mt_bench"} and len({item.category for item in items}) == 8


def test_alpaca_eval_rows_are_one_turn_with_the_baseline_answer():
    items = read_eval_set(EVAL / "alpaca_eval.jsonl")
    assert len(items) == 805 and all(len(item.turns) == 1 and item.references for item in items)
    assert len({item.id for item in items}) == 805


def test_plain_prompts_and_rows_that_fit_no_format(tmp_path):
    (tmp_path / "prompts.txt").write_text("first prompt\n\nsecond prompt\n")
    assert [item.turns for item in read_eval_set(tmp_path / "prompts.txt")] == [("first prompt",), ("second prompt",)]
    (tmp_path / "plain.jsonl").write_text(json.dumps({"prompt": "name three rivers"}) + "\n")
    (item,) = read_eval_set(tmp_path / "plain.jsonl")
    assert item.turns == ("name three rivers",) and item.references is None
    (tmp_path / "odd.jsonl").write_text(json.dumps({"question": "ok"}) + "\n" + json.dumps({"body": "no prompt"}) + "\n")
    with pytest.raises(InputError, match=r"odd\.jsonl.*line 2.*'body'"):
        read_eval_set(tmp_path / "odd.jsonl")
