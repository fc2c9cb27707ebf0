"""Instantiate and judge as resumable stages: shards, markers, the request cache, stats."""

import json

import pytest

from fineinstructions.config import load_config
from fineinstructions.errors import UserError
from fineinstructions.execution.instantiate import run_instantiate
from fineinstructions.execution.judge import run_judge
from fineinstructions.io import ShardWriter, read_rows
from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.fake import ScriptedLLM
from fineinstructions.records import MatchRow, PairRow, TemplateRow

SENTENCES = [
    "Owls hunt mostly at night.", "Bees make honey from nectar.", "Salmon swim upstream to spawn.",
    "Bats find insects by echolocation.", "Ants follow scent trails home.", "Frogs call loudly after rain.",
]


class Crash(Exception):
    pass


class CrashingLLM(ScriptedLLM):
    """Scripted replies, and a crash (like a killed process) after ``crash_after`` requests."""

    def __init__(self, replies, crash_after):
        super().__init__(replies)
        self.crash_after = crash_after

    def generate(self, requests):
        if len(self.calls) + len(requests) > self.crash_after:
            raise Crash()
        return super().generate(requests)


def setup(tmp_path):
    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(json.dumps({"id": f"d{i}", "text": s}) + "\n" for i, s in enumerate(SENTENCES)))
    templates = [
        TemplateRow(id=f"t{k}", query_id=f"q{k}", source="s", template=f"tell me about <fi>an animal</fi> {k}",
                    compatible_document_description="d", variables=("an animal",), complexity=1, model="m", prompt_version="v")
        for k in range(2)
    ]
    with ShardWriter(tmp_path / "templates", TemplateRow) as writer:
        writer.write(templates)
    with ShardWriter(tmp_path / "matches", MatchRow) as writer:  # d5 has no match
        writer.write(MatchRow(document_id=f"d{i}", template_id=f"t{k}", chunk=k, score=0.9) for i in range(5) for k in range(2))
    return documents


def replies():
    """Two per document: a grounded pair, then (for odd documents) a null."""
    out = []
    for i in range(5):
        words = SENTENCES[i].split()
        out.append(json.dumps({"instruction": f"tell me about it {i}", "answer": f"<excerpt>{words[0]}<...>{words[-1]}</excerpt>"}))
        out.append("null" if i % 2 else json.dumps({"instruction": f"tell me more {i}", "answer": f"<excerpt>{' '.join(words[:2])}<...>{words[-1]}</excerpt> and that is really all there is"}))
    return out


def config(**overrides):
    return load_config("embedded", overrides=[f"{k}={v}" for k, v in {"instantiate.shard_size": 2, **overrides}.items()])


def instantiate(tmp_path, out, llm):
    return run_instantiate(
        [tmp_path / "matches"], [tmp_path / "templates"], [tmp_path / "docs.jsonl"], out, config(),
        llm=llm, show_progress=False, log=lambda m: None,
    )


def test_instantiate_counts_balance_and_shards_are_marked(tmp_path):
    setup(tmp_path)
    stats = instantiate(tmp_path, tmp_path / "pairs", ScriptedLLM(replies()))["instantiate"]
    assert stats["in"] == 10 and stats["documents"] == 5
    assert stats["in"] == stats["out"] + sum(stats["skipped"].values()) + sum(stats["failed"].values())
    assert stats["skipped"] == {"incompatible": 2}
    assert stats["failed"] == {"low_excerpt_ratio": 3}  # " ok" after a short excerpt
    pairs = list(read_rows([tmp_path / "pairs"], PairRow))
    assert len(pairs) == stats["out"] == 5
    # Every pair carries the embedder's relevance scores, for the judge's gate.
    assert all(-1 <= p.relevance <= 1 and -1 <= p.passage_relevance <= 1 for p in pairs)
    assert sorted(p.name for p in (tmp_path / "pairs" / ".shards").glob("0*.json")) == ["00000.json", "00001.json", "00002.json"]
    rejects = [json.loads(line) for line in (tmp_path / "pairs.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["incompatible"] * 2 + ["low_excerpt_ratio"] * 3


def test_a_crash_mid_shard_resumes_with_the_same_output_and_no_repeated_calls(tmp_path):
    setup(tmp_path)
    instantiate(tmp_path, tmp_path / "whole", ScriptedLLM(replies()))

    out, cache = tmp_path / "pairs", tmp_path / "pairs.cache.sqlite"
    # Shards of 2 documents = 4 requests; the crash comes at the 10th, inside the third shard.
    crashing = CachedLLM(CrashingLLM(replies(), crash_after=9), cache)
    with pytest.raises(Crash):
        instantiate(tmp_path, out, crashing)
    crashing.close()
    assert (out / ".shards" / "00001.json").exists() and not (out / ".shards" / "00002.json").exists()

    # The resumed run gets only the replies never produced: a repeated call would take a wrong one.
    rest = ScriptedLLM(replies()[9:])
    stats = instantiate(tmp_path, out, CachedLLM(rest, cache))["instantiate"]
    assert len(rest.calls) == 1 and not rest.replies
    # Every request was answered by the model exactly once, over both runs: the call of
    # shard 2 that completed before the crash came back from the cache.
    assert (stats["model_calls"], stats["cache_hits"]) == (9, 1)
    whole = sorted(read_rows([tmp_path / "whole"], PairRow), key=lambda p: p.id)
    resumed = sorted(read_rows([out], PairRow), key=lambda p: p.id)
    assert [p.id for p in resumed] == [p.id for p in whole]
    assert [(p.instruction, p.answer, p.excerpt_spans) for p in resumed] == [(p.instruction, p.answer, p.excerpt_spans) for p in whole]
    assert (tmp_path / "pairs.rejects.jsonl").read_text().count("\n") == 5


def test_a_finished_output_is_not_redone_and_other_settings_are_refused(tmp_path):
    setup(tmp_path)
    instantiate(tmp_path, tmp_path / "pairs", ScriptedLLM(replies()))
    again = ScriptedLLM([])
    stats = instantiate(tmp_path, tmp_path / "pairs", again)
    assert again.calls == [] and stats["instantiate"]["out"] == 5
    with pytest.raises(UserError, match="different job .*settings"):
        run_instantiate(
            [tmp_path / "matches"], [tmp_path / "templates"], [tmp_path / "docs.jsonl"], tmp_path / "pairs",
            config(**{"instantiate.min_excerpt_ratio": 0.5}), llm=ScriptedLLM([]), show_progress=False, log=lambda m: None,
        )


def test_templates_missing_from_the_bank_are_a_clear_error(tmp_path):
    setup(tmp_path)
    empty = tmp_path / "other-bank"
    empty.mkdir()
    (empty / "x.jsonl").write_text("")
    with pytest.raises(UserError, match="matched template.*not in"):
        run_instantiate(
            [tmp_path / "matches"], [empty / "x.jsonl"], [tmp_path / "docs.jsonl"], tmp_path / "p", config(),
            llm=ScriptedLLM([]), show_progress=False, log=lambda m: None,
        )


def test_judge_resumes_per_input_file_and_keeps_counts_balanced(tmp_path):
    pairs_dir = tmp_path / "pairs"
    rows = [PairRow(id=f"p{i}", document_id="d", template_id="t", query_id="q", instruction=f"i{i}", answer="a", excerpt_ratio=1.0) for i in range(6)]
    with ShardWriter(pairs_dir, PairRow, rows_per_shard=2) as writer:
        writer.write(rows)
    scores = ['{"score": 5}', '{"score": 2}', "no idea", '{"score": 4}', '{"score": 4}', '{"score": 1}']
    cache = tmp_path / "judged.cache.sqlite"
    # The relevance gate is off: these hand-made pairs ("i0" -> "a") would all be irrelevant.
    judging = config(**{"judge.min_relevance": "null"})
    with pytest.raises(Crash):
        run_judge([pairs_dir], tmp_path / "judged", judging, llm=CachedLLM(CrashingLLM(scores, crash_after=3), cache), show_progress=False, log=lambda m: None)
    rest = ScriptedLLM(scores[3:])
    stats = run_judge([pairs_dir], tmp_path / "judged", judging, llm=CachedLLM(rest, cache), show_progress=False, log=lambda m: None)["judge"]
    assert len(rest.calls) == 3
    assert stats["in"] == 6 and stats["out"] == 3
    assert stats["skipped"] == {"low_score": 2} and stats["failed"] == {"unparseable_judgement": 1}
    assert stats["score_histogram"] == {"1": 1, "2": 1, "3": 0, "4": 2, "5": 1}
    kept = sorted(read_rows([tmp_path / "judged"], PairRow), key=lambda p: p.id)
    assert [(p.id, p.judge_score) for p in kept] == [("p0", 5), ("p3", 4), ("p4", 4)]


def test_documents_sharing_an_id_are_instantiated_once(tmp_path):
    setup(tmp_path)
    # d0 three times (identical texts share a content-hash id): in its own shard and in a later one.
    lines = (tmp_path / "docs.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "docs.jsonl").write_text(lines[0] + lines[0] + "".join(lines[1:]) + lines[0])
    stats = instantiate(tmp_path, tmp_path / "pairs", ScriptedLLM(replies()))
    assert stats["instantiate"]["in"] == 10 and stats["instantiate"]["documents"] == 5
    assert stats["read_documents"]["skipped"] == {"duplicate_id": 2}
    pairs = list(read_rows([tmp_path / "pairs"], PairRow))
    assert len({p.id for p in pairs}) == len(pairs) == 5
