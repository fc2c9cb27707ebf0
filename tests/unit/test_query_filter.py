import itertools
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from fineinstructions.config import QueriesConfig
from fineinstructions.errors import ConfigError
from fineinstructions.io import read_queries
from fineinstructions.records import QueryRow
from fineinstructions.stages.decontaminate import Decontaminator
from fineinstructions.stages.moderation import LexiconHarmChecker
from fineinstructions.stages.query_filter import QueryFilter

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUERIES = DATA / "queries.jsonl"
needs_real_data = pytest.mark.skipif(
    not QUERIES.is_file(), reason=f"the shared real data is not here ({QUERIES})"
)

LONG_PROMPT = "Janet's ducks lay sixteen eggs per day and she eats three for breakfast every morning with toast"


class RecordingChecker:
    """A harm checker that flags texts containing "forbidden" and records each call."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def check(self, texts):
        self.calls.append(list(texts))
        return ["forbidden_topic" if "forbidden" in t else None for t in texts]


_ids = itertools.count()


def rows(*texts):
    """Queries with ids unique across calls (a repeated id is a filter of its own)."""
    return [QueryRow(id=f"q{next(_ids)}", text=t, source="test") for t in texts]


def make_filter(**config):
    decontaminator = Decontaminator(n=13)
    decontaminator.add("gsm8k", LONG_PROMPT)
    decontaminator.add("trivia", "What is the capital of France?")
    checker = RecordingChecker()
    return QueryFilter(QueriesConfig(**config), checker=checker, decontaminator=decontaminator), checker


def test_filters_run_in_order_and_say_why_each_query_was_dropped():
    query_filter, checker = make_filter()
    batch = rows(
        "How do tides work?",
        "how do  TIDES work?",
        "what is the capital of france",
        f"Solve this: {LONG_PROMPT}.",
        "Tell me about the forbidden experiment",
        "Tell me about the forbidden experiment!",
        "What rhymes with orange?",
    )
    kept, dropped = query_filter.filter(batch)
    assert [r.text for r in kept] == ["How do tides work?", "What rhymes with orange?"]
    assert [(r.id, reason) for r, reason in dropped] == [
        ("q1", "exact_duplicate"),
        ("q2", "contaminated:trivia"),
        ("q3", "contaminated:gsm8k"),
        ("q4", "harmful:forbidden_topic"),
        ("q5", "near_duplicate"),
    ]
    # one call per batch, on the queries the other filters kept
    assert checker.calls == [["How do tides work?", "Tell me about the forbidden experiment", "What rhymes with orange?"]]
    assert query_filter.counts == Counter(
        {"exact_duplicate": 1, "near_duplicate": 1, "contaminated:trivia": 1, "contaminated:gsm8k": 1, "harmful:forbidden_topic": 1}
    )


def test_remembers_earlier_batches_and_keeps_counting():
    query_filter, checker = make_filter()
    query_filter.filter(rows("How do tides work?", "What rhymes with orange?"))
    kept, dropped = query_filter.filter(rows("HOW DO TIDES WORK?", "Why is the sea salty?"))
    assert [r.text for r in kept] == ["Why is the sea salty?"]
    assert [reason for _, reason in dropped] == ["exact_duplicate"]
    assert checker.calls[-1] == ["Why is the sea salty?"]
    assert query_filter.stats == {"in": 4, "out": 3, "skipped": {"exact_duplicate": 1}}
    query_filter.filter(rows("How do tides work?"))
    assert checker.calls[-1] == ["Why is the sea salty?"]  # nothing survived: no call
    assert query_filter.counts["exact_duplicate"] == 2


def test_without_checker_or_protected_sets_only_dedup_runs():
    query_filter = QueryFilter(QueriesConfig(exact_dedup=False, near_dedup_threshold=None))
    batch = rows("same", "same", "Tell me about the forbidden experiment")
    kept, dropped = query_filter.filter(batch)
    assert kept == batch and dropped == []


def test_the_runner_loads_protected_sets_and_the_checker_for_the_filter_stage(tmp_path):
    from fineinstructions.execution.templatize import query_filter_stage
    from fineinstructions.stages.base import outcomes

    (tmp_path / "trivia.jsonl").write_text(json.dumps({"prompt": "Who painted the Mona Lisa?"}) + "\n")
    config = QueriesConfig(protected=(str(tmp_path / "trivia.jsonl"),), protected_text_field="prompt")
    stage = query_filter_stage(config)
    assert isinstance(stage.filter.checker, LexiconHarmChecker)
    assert stage.filter.decontaminator.sets == {"trivia": 1}
    result = stage.process(rows("who painted the mona lisa", "how to make a pipe bomb at home", "Who painted the Night Watch?"))
    assert [r.text for r in result.rows] == ["Who painted the Night Watch?"]
    assert [r.reason for r in result.rejects] == ["contaminated:trivia", "harmful:weapons/explosives_cbrn"]
    assert outcomes(result.counts) == {"in": 3, "out": 1, "skipped": {"contaminated": 1, "harmful": 1}, "failed": {}}

    assert query_filter_stage(QueriesConfig(moderation="off")).filter.checker is None
    with pytest.raises(ConfigError, match="missing.jsonl"):
        query_filter_stage(QueriesConfig(protected=(str(tmp_path / "missing.jsonl"),)))


@needs_real_data
def test_real_queries_dedup_quickly_keep_most_and_are_deterministic():
    real = list(read_queries([QUERIES]))
    assert len(real) == 4110
    config = QueriesConfig(moderation="off")
    started = time.perf_counter()
    kept, dropped = QueryFilter(config).filter(real)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"dedup of the real queries took {elapsed:.2f} s"
    assert len(kept) >= 0.95 * len(real)
    assert len(kept) + len(dropped) == len(real)

    again = QueryFilter(config)
    streamed = []
    for start in range(0, len(real), 500):  # in batches: the same decisions as all at once
        streamed.extend(again.filter(real[start : start + 500])[1])
    assert [(r.id, reason) for r, reason in streamed] == [(r.id, reason) for r, reason in dropped]


@needs_real_data
def test_offline_lexicon_flags_at_most_one_percent_of_real_queries():
    real = list(read_queries([QUERIES]))
    verdicts = LexiconHarmChecker().check([r.text for r in real])
    flagged = [v for v in verdicts if v is not None]
    assert len(flagged) <= 0.01 * len(real)


def test_a_repeated_query_id_keeps_the_first_and_is_counted():
    query_filter = QueryFilter(QueriesConfig())
    first = [QueryRow(id="same", text="how do I repot a cactus?", source="test")]
    later = [QueryRow(id="other", text="what is a good soil for succulents?", source="test"),
             QueryRow(id="same", text="why are my cactus spines turning brown?", source="test")]
    kept, dropped = query_filter.filter(first)
    kept_later, dropped_later = query_filter.filter(later)
    assert [q.text for q in kept + kept_later] == ["how do I repot a cactus?", "what is a good soil for succulents?"]
    assert [(q.text, reason) for q, reason in dropped_later] == [("why are my cactus spines turning brown?", "duplicate_id")]
    assert query_filter.stats == {"in": 3, "out": 2, "skipped": {"duplicate_id": 1}}
