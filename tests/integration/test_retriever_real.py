"""The retriever fine-tuned on the CPU (all-MiniLM-L6-v2, the embedded embedder) on real
documents from ../shared/data, labelled by a rule-following teacher: trained for one
epoch in both rounds, saved, recalibrated on held-out labels, and then used by ``index``
and ``match``, which refuse the index the old embedder built and take the stored
threshold without ``--threshold``."""

import json
import re

import pytest

from fineinstructions.config import load_config
from fineinstructions.errors import UserError
from fineinstructions.execution.index import run_index
from fineinstructions.execution.match import run_match
from fineinstructions.interface.retriever import run_calibrate, train_retriever
from fineinstructions.models.fake import ScriptedLLM
from support.data import real_documents

pytestmark = pytest.mark.slow
QUIET = dict(show_progress=False, log=lambda message: None)

TOPICS = {
    "food": "recipe cook food eat restaurant chef meal",
    "sport": "game team player season coach match league",
    "politics": "government minister election party president vote law",
    "health": "health patient doctor hospital disease medical",
    "money": "company market price business bank pay million",
    "school": "school student university teacher education class",
}


class TopicTeacher(ScriptedLLM):
    """Labels a (passage, template) compatible when the passage uses two of its topic's words."""

    def generate(self, requests):
        for request in requests:
            turn = request.messages[-1].content
            passage, description = turn.split("Document:\n", 1)[1].rsplit("\n\nTemplate: ", 1)
            topic = next((t for t in TOPICS if t in description), None)
            words = set(re.findall(r"[a-z]+", passage.lower()))
            hits = len(words & set(TOPICS[topic].split())) if topic else 0
            self.queue(json.dumps({"compatible": hits >= 2}))
        return super().generate(requests)


def test_the_retriever_trains_recalibrates_and_match_uses_it(tmp_path):
    documents = real_documents(16, step=19)
    (tmp_path / "documents.jsonl").write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in documents))
    bank = [{"template": f"what does the article say about <fi>a {topic} subject</fi>",
             "compatible_document_description": f"A news article or page about {topic}: {words}."}
            for topic, words in TOPICS.items()]
    (tmp_path / "bank.jsonl").write_text("".join(json.dumps(row) + "\n" for row in bank))
    config = load_config()
    out = tmp_path / "retriever"
    result = train_retriever([tmp_path / "documents.jsonl"], [tmp_path / "bank.jsonl"], out, config, candidates=6,
                             held_out_share=0.3, llm=TopicTeacher(), **{"log": lambda m: None})
    assert set(result["training"]) == {"round_1", "round_2"} and result["labels"]["held_out"] > 0
    assert (out / "config_sentence_transformers.json").exists() and (out / "retriever.json").exists()
    stored = json.loads((out / "fineinstructions.json").read_text())["match_threshold"]
    # A finished retriever is kept: run again, nothing is labelled or trained (the teacher has no reply).
    assert train_retriever([tmp_path / "documents.jsonl"], [tmp_path / "bank.jsonl"], out, config, llm=ScriptedLLM([]),
                           log=lambda m: None) == result
    assert stored == result["after"]["threshold"] and 0 <= result["after"]["precision"] <= 1
    # The held-out labels are calibrated again by the command, with the same result.
    trained = load_config(overrides=[f"embed.model={out}"])
    again = run_calibrate([out / "work" / "labels-held-out.jsonl"], [tmp_path / "documents.jsonl"], [tmp_path / "bank.jsonl"],
                          trained)
    assert again["threshold"] == pytest.approx(stored, abs=1e-3)
    # The index the old embedder built is refused; one built with the new model is used
    # with the stored threshold.
    with pytest.raises(UserError, match="not comparable"):
        run_match([tmp_path / "documents.jsonl"], out / "work" / "index", tmp_path / "matches-old", trained, **QUIET)
    run_index([tmp_path / "bank.jsonl"], tmp_path / "index", trained, **QUIET)
    stats = run_match([tmp_path / "documents.jsonl"], tmp_path / "index", tmp_path / "matches", trained, **QUIET)
    assert stats["match"]["threshold"] == stored and stats["match"]["in"] == len(documents)
