"""evaluate: the win-rate arithmetic with scripted verdicts, and two tiny models trained
here (one for 40 steps, one for 1) evaluated end to end with a scripted judge."""

from __future__ import annotations

import json

import pytest

from fineinstructions.config import load_config
from fineinstructions.experiments.evaluate import run_evaluate, win_rate
from fineinstructions.experiments.export import export_dataset
from fineinstructions.experiments.pretrain import PretrainSettings, run_pretrain
from fineinstructions.models.fake import ScriptedLLM
from support.audit_rows import CLEAN

pytest.importorskip("transformers")
QUIET = {"log": lambda message: None}


def test_the_win_rate_counts_both_orders_and_its_interval_holds_it():
    # Per item: the first model's answer shown first, then shown second.
    shown_first = ["first", "first", "tie", "second", None]
    shown_second = ["second", "first", "tie", "first", "second"]
    # wins both ways; split; tie; loses both ways; one order unparseable, won the other
    result = win_rate(shown_first, shown_second, resamples=2000, seed=0)
    assert result["win_rate"] == pytest.approx((1 + 0.5 + 0.5 + 0 + 1) / 5)
    assert (result["wins"], result["ties_or_splits"], result["losses"]) == (2, 2, 1)
    low, high = result["ci95"]
    assert 0 <= low < result["win_rate"] < high <= 1
    assert win_rate(shown_first, shown_second, resamples=2000, seed=0) == result  # seeded
    assert win_rate([None], [None], resamples=10, seed=0)["win_rate"] is None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny models on the hand-made pairs: one trained 40 steps, one 1 step."""
    from fineinstructions.io import ShardWriter
    from fineinstructions.records import PairRow

    root = tmp_path_factory.mktemp("models")
    folder = root / "dataset"
    with ShardWriter(folder, PairRow) as writer:
        writer.write(CLEAN)
    export_dataset(folder, root / "tokens", format="tokens", tokenizer="embedded", **QUIET)
    made = []
    for name, steps in (("trained", 40), ("untrained", 1)):
        settings = PretrainSettings(seq_len=32, batch_size=2, tokens=32 * 2 * steps, loss="all", learning_rate=1e-2,
                                    save_steps=1000)
        run_pretrain(root / "tokens", root / name, settings, **QUIET)
        made.append(root / name)
    return made


def test_two_models_end_to_end_with_a_scripted_judge(models, tmp_path):
    eval_set = tmp_path / "ours.jsonl"  # the training pairs' instructions, their answers as references
    eval_set.write_text("".join(json.dumps({"id": p.id, "instruction": p.instruction, "reference": p.answer}) + "\n"
                                for p in CLEAN))
    judge = ScriptedLLM(
        ['{"score": 7}', '{"score": 6}', '{"score": 9}']  # grading the trained model's three answers
        + ['{"score": 2}', "no idea", '{"score": 3}']  # the untrained model's (one unparseable)
        + ['{"better": "first"}', '{"better": "second"}']  # item 1: trained shown first, then second: wins both
        + ['{"better": "tie"}', '{"better": "tie"}']  # item 2: tie
        + ['{"better": "second"}', '{"better": "first"}']  # item 3: loses both
    )
    result = run_evaluate(models, eval_set, tmp_path / "eval", load_config(), judge=judge, **QUIET)
    trained, untrained = (result["models"][str(m)] for m in models)
    # The model trained on these answers finds them far likelier than the one barely trained.
    assert trained["reference_nll"] < untrained["reference_nll"] - 1
    assert trained["reference_tokens"] == untrained["reference_tokens"] > 3
    assert trained["grade"] == {"mean": pytest.approx(22 / 3, abs=1e-3), "graded": 3, "unparseable": 0}
    assert untrained["grade"] == {"mean": 2.5, "graded": 2, "unparseable": 1}
    h2h = result["head_to_head"]
    assert h2h["first"] == str(models[0]) and h2h["win_rate"] == pytest.approx(0.5) and h2h["items"] == 3
    judgements = [json.loads(line) for line in (tmp_path / "eval" / "judgements.jsonl").read_text().splitlines()]
    assert len(judgements) == 12 and judgements[4]["raw"] == "no idea" and judgements[4]["score"] is None
    assert {j["prompt_version"] for j in judgements} == {"grade-v1", "compare-v1"}
    answers = [json.loads(line) for line in (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 6 and all(isinstance(a["answer"], str) for a in answers)
    # The judge saw the first model's answer first, then second.
    first_compare = judge.calls[6].messages[1].content
    assert answers[0]["answer"] in first_compare.split("Second answer:")[0]
