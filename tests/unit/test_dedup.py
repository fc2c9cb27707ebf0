import json
import os
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from fineinstructions.stages.dedup import (
    Deduplicator,
    lsh_bands,
    normalize_query,
    proposed,
    shingle_set,
)


def jaccard(a: str, b: str, size: int = 5) -> float:
    sa, sb = shingle_set(normalize_query(a), size), shingle_set(normalize_query(b), size)
    return len(sa & sb) / len(sa | sb)


# 15-word queries and a one-word edit of each (the first occurrence of the word).
EDITS = [
    ("Could someone recommend introductory textbooks explaining quantum mechanics fundamentals for undergraduate physics students without calculus", "for", "to"),
    ("What are the environmental consequences of deforestation in tropical rainforests for indigenous communities and climate", "for", "on"),
    ("Please summarise the following research article about renewable energy storage technologies and their economic viability", "the", "this"),
    ("How should beginners structure weekly strength training programs when recovering from back injuries without supervision", "when", "while"),
    ("Explain the differences between supervised unsupervised and reinforcement learning approaches with practical examples from industry", "with", "using"),
]

DISTINCT = [
    "how many calories in a banana",
    "how many calories in an apple",
    "how to install python on windows",
    "how to install java on windows",
    "who wrote the declaration of independence",
    "who signed the declaration of independence",
    "what is the capital of australia",
    "Showing A Menu When Only Users Are Logged In",
    "How do I typeset a matrix with brackets in LaTeX?",
    "best budget mechanical keyboard for programming",
]


def test_normalize_query_casefolds_and_collapses_whitespace():
    assert normalize_query("  Hello\t\tWORLD \n again  ") == "hello world again"
    assert normalize_query("Straße") == "strasse"


def test_shingles_of_short_texts_are_the_text_itself():
    assert shingle_set("abc", 5) == {"abc"}
    assert shingle_set("abcdef", 5) == {"abcde", "bcdef"}


def test_exact_duplicates_across_case_and_whitespace():
    dedup = Deduplicator(near_threshold=None)
    assert dedup.check("What is the capital of France?") is None
    assert dedup.check("  what IS the capital\nof   france? ") == "exact_duplicate"
    assert dedup.check("What is the capital of Spain?") is None
    assert dedup.kept == 2


def test_identical_texts_are_near_duplicates_when_exact_matching_is_off():
    dedup = Deduplicator(exact=False)
    assert dedup.check("calories in a flour wrap") is None
    assert dedup.check("Calories in a flour wrap") == "near_duplicate"


def test_one_word_edits_of_15_word_queries_are_near_duplicates():
    for text, old, new in EDITS:
        edited = text.replace(f" {old} ", f" {new} ", 1)
        assert len(text.split()) == len(edited.split()) == 15 and edited != text
        assert jaccard(text, edited) >= 0.85  # clearly over the threshold
        dedup = Deduplicator(near_threshold=0.8)
        assert dedup.check(text) is None
        assert dedup.check(edited) == "near_duplicate", edited


def test_distinct_queries_are_kept_even_when_they_share_a_pattern():
    dedup = Deduplicator(near_threshold=0.8)
    assert [dedup.check(t) for t in DISTINCT] == [None] * len(DISTINCT)
    assert all(jaccard(a, b) < 0.7 for a, b in zip(DISTINCT[::2], DISTINCT[1::2], strict=True))


def test_only_exact_matching_when_near_is_off():
    text, old, new = EDITS[0]
    dedup = Deduplicator(near_threshold=None)
    assert dedup.check(text) is None
    assert dedup.check(text.replace(f" {old} ", f" {new} ", 1)) is None


def test_short_texts_below_the_shingle_size():
    dedup = Deduplicator(shingle_size=5)
    assert dedup.check("hi") is None
    assert dedup.check("HI") == "exact_duplicate"
    assert dedup.check("ho") is None


@pytest.mark.parametrize("num_perm, threshold", [(128, 0.8), (128, 0.5), (64, 0.9), (256, 0.7)])
def test_banding_finds_pairs_above_the_threshold_and_few_far_below(num_perm, threshold):
    dedup = Deduplicator(num_perm=num_perm, near_threshold=threshold)
    bands, rows = dedup.bands, dedup.rows
    assert (bands, rows) == lsh_bands(num_perm, threshold) and bands * rows <= num_perm
    assert proposed(threshold, bands, rows) >= 0.75
    assert proposed(min(1.0, threshold + 0.1), bands, rows) >= 0.98
    assert proposed(threshold / 2, bands, rows) < 0.15  # candidates are verified: these cost time only


def test_banding_weighs_misses_over_extra_candidates():
    assert lsh_bands(128, 0.8) == (14, 9)
    # with misses and extra candidates weighed alike, fewer candidates and more misses
    bands, rows = lsh_bands(128, 0.8, false_negative_weight=0.5)
    assert proposed(0.8, bands, rows) < proposed(0.8, 14, 9)
    assert proposed(0.6, bands, rows) < proposed(0.6, 14, 9)
    assert lsh_bands(128, 1.0) == (1, 128)  # only identical signatures collide


def test_a_threshold_of_one_keeps_only_identical_signatures_as_near_duplicates():
    dedup = Deduplicator(exact=False, near_threshold=1.0)
    assert dedup.check("how many calories in a banana") is None
    assert dedup.check("How many calories in a  banana") == "near_duplicate"
    assert dedup.check("how many calories in a bananas") is None


def test_minhash_estimates_jaccard_without_bias():
    rng = random.Random(7)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    dedup = Deduplicator()
    errors, similarities = [], []
    for _ in range(300):
        base = [rng.choice(vocabulary) for _ in range(30)]
        replaced = rng.random()  # each pair's share of replaced words: similarities span 0..1
        other = [rng.choice(vocabulary) if rng.random() < replaced else w for w in base]
        a, b = " ".join(base), " ".join(other)
        estimate = float((dedup.signature(a) == dedup.signature(b)).mean())
        errors.append(estimate - jaccard(a, b))
        similarities.append(jaccard(a, b))
    errors = np.array(errors)
    assert min(similarities) < 0.2 and max(similarities) > 0.9
    assert np.abs(errors).mean() < 0.04  # sqrt(J(1-J)/128) is at most 0.044
    assert abs(errors.mean()) < 0.01
    assert np.abs(errors).max() < 0.2


def test_signatures_fit_uint32_and_are_seeded():
    a = Deduplicator(seed=0).signature("some query text")
    assert a.dtype == np.uint32 and a.shape == (128,)
    assert not np.array_equal(a, Deduplicator(seed=1).signature("some query text"))


SCRIPT = """
import json, sys
from fineinstructions.stages.dedup import Deduplicator
texts = json.loads(sys.stdin.read())
dedup = Deduplicator()
print(json.dumps({"sig": dedup.signature(texts[0]).tolist(), "checks": [dedup.check(t) for t in texts]}))
"""


def test_same_signatures_and_decisions_in_every_process():
    texts = [t for text, old, new in EDITS for t in (text, text.replace(f" {old} ", f" {new} ", 1))]
    texts += DISTINCT + [DISTINCT[0].upper()]
    dedup = Deduplicator()
    expected = {"sig": dedup.signature(texts[0]).tolist(), "checks": [dedup.check(t) for t in texts]}
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert json.loads(out.stdout) == expected
    assert expected["checks"].count("near_duplicate") == len(EDITS)
    assert expected["checks"][-1] == "exact_duplicate"


def test_filter_splits_rows_and_remembers_across_calls():
    dedup = Deduplicator()
    rows = [SimpleNamespace(id=i, text=t) for i, t in enumerate(["a b c d e f", "A  B c d e f", "x y z"])]
    kept, dropped = dedup.filter(rows)
    assert [r.id for r in kept] == [0, 2]
    assert [(r.id, reason) for r, reason in dropped] == [(1, "exact_duplicate")]
    kept, dropped = dedup.filter([SimpleNamespace(id=3, text="x y z")])
    assert kept == [] and dropped[0][1] == "exact_duplicate"


def test_rejects_bad_parameters():
    with pytest.raises(ValueError):
        Deduplicator(near_threshold=1.5)
    with pytest.raises(ValueError):
        Deduplicator(num_perm=0)
