"""The retriever's rules: labels read with clear errors, the chunk's passage, the
threshold with the best F1, the teacher's compatibility labels, and the threshold stored
with a trained model that match then uses."""

import json

import numpy as np
import pytest

from fineinstructions.errors import InputError, UserError
from fineinstructions.experiments.retriever import (
    Label,
    calibrate,
    chunk_passage,
    precision_recall,
    read_labels,
    write_threshold,
)
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.stages.compatibility import CompatibilityLabeler
from fineinstructions.stages.match import calibrated_threshold


def test_labels_are_read_from_the_judged_file_and_a_bad_row_is_named(tmp_path):
    good = tmp_path / "labels.jsonl"
    good.write_text('{"document_id": "d1", "template_id": "t1", "chunk": 2, "compatible": true}\n'
                    '{"document_id": "d2", "template_id": "t1", "label": 0}\n')
    assert read_labels([good]) == [Label("d1", "t1", 2, True), Label("d2", "t1", None, False)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"document_id": "d1", "template_id": "t1", "compatible": true}\n'
                   '{"document_id": "d1", "template_id": "t2", "compatible": "perhaps"}\n')
    with pytest.raises(InputError) as caught:
        read_labels([bad])
    assert "bad.jsonl" in str(caught.value) and "2" in str(caught.value) and "compatible" in str(caught.value)


def test_the_shipped_judged_labels_read():
    from pathlib import Path

    labels = read_labels([Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "threshold-labels-minilm.jsonl"])
    assert len(labels) == 140 and any(label.compatible for label in labels) and all(label.chunk is not None for label in labels)


class Words:
    """A whitespace tokenizer with character offsets, like a fast tokenizer's."""

    def __call__(self, text, **options):
        offsets, at = [], 0
        for word in text.split():
            start = text.index(word, at)
            offsets.append((start, start + len(word)))
            at = start + len(word)
        return {"offset_mapping": offsets}


def test_a_chunks_passage_is_the_tokens_of_at_least_half_its_kernels_peak():
    text = " ".join(f"w{i}" for i in range(1, 601))  # 600 tokens
    assert chunk_passage(text, Words(), 0, 5, 0.05) == text
    passage = chunk_passage(text, Words(), 3, 5, 0.05).split()
    # centre 3 * 600 / 6 = 300; half the peak within sqrt(2 ln 2) * 0.05 * 600 = 35.3 tokens
    assert passage[0] == "w265" and passage[-1] == "w335"


def test_the_threshold_with_the_best_f1_is_chosen():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    truth = [True, True, False, True, False]
    best = calibrate(scores, truth)
    assert (best["threshold"], best["precision"], best["recall"], best["f1"]) == (0.3, 0.75, 1.0, 0.8571)
    assert precision_recall(scores, np.array(truth), 0.8)["precision"] == 1.0
    with pytest.raises(UserError, match="compatible and incompatible"):
        calibrate(scores, [True] * 5)


def test_the_teachers_labels_are_its_json_and_nothing_is_guessed():
    teacher = ScriptedLLM(['{"compatible": true}', "maybe", '{"compatible": false}'])
    labels = CompatibilityLabeler(teacher)([("a passage", "how to <fi>x</fi>")] * 3)
    assert labels == [True, None, False]
    request = teacher.calls[0]
    assert request.json_schema["required"] == ["compatible"] and "Template: how to <fi>x</fi>" in request.messages[-1].content


def test_match_uses_the_threshold_stored_with_a_trained_model(tmp_path):
    with pytest.raises(UserError, match="no calibrated match threshold"):
        calibrated_threshold(str(tmp_path))
    write_threshold(tmp_path, {"threshold": 0.61, "precision": 0.8, "recall": 0.5})
    assert calibrated_threshold(str(tmp_path)) == 0.61
    assert json.loads((tmp_path / "fineinstructions.json").read_text())["calibration"]["recall"] == 0.5
