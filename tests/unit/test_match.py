"""Match selection rules with a scripted embedder over a real FAISS index."""

import json
from collections import Counter

import numpy as np
import pytest

from fineinstructions.config import IndexConfig
from fineinstructions.errors import UserError
from fineinstructions.execution.match import target_distribution
from fineinstructions.models.embedder import EmbedderIdentity, TokenEmbeddings, normalize
from fineinstructions.models.index import IndexBuilder, settings_for
from fineinstructions.records import DocumentRow
from fineinstructions.stages.match import Matcher, calibrated_threshold, choose

DIM = 16
IDENTITY = EmbedderIdentity("scripted", "scripted", DIM, 64, (0.1, 0.2, 0.3))


def axis(i, dim=DIM):
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


class ScriptedEmbedder:
    """Token embeddings looked up by document text."""

    identity = IDENTITY
    dimension = DIM

    def __init__(self, tokens: dict[str, np.ndarray]):
        self.tokens = tokens
        self.calls = 0

    def token_embeddings(self, texts):
        self.calls += 1
        return [TokenEmbeddings(self.tokens[t], len(self.tokens[t]), len(self.tokens[t])) for t in texts]

    def embed(self, texts):
        return normalize(np.stack([self.tokens[t].mean(axis=0) for t in texts]))


def make_index(vectors, complexities, ids=None):
    vectors = normalize(np.asarray(vectors, dtype=np.float32))
    settings = settings_for(len(vectors), DIM, len(vectors), IndexConfig(kind="flat"))
    builder = IndexBuilder(settings, IDENTITY)
    builder.add(vectors, ids or [f"t{i}" for i in range(len(vectors))], complexities)
    return builder.finish()


def near(direction, cosine, rng, other=1):
    """A unit vector at the given cosine from axis ``direction``."""
    v = cosine * axis(direction) + np.sqrt(1 - cosine**2) * normalize(rng.standard_normal(DIM) * (np.arange(DIM) != direction))
    return v.astype(np.float32)


def doc(name):
    return DocumentRow(id=name, text=name, source="test")


def test_one_template_per_vector_never_twice_for_a_document():
    rng = np.random.default_rng(0)
    bank = [near(0, 0.9, rng) for _ in range(10)] + [near(0, 0.3, rng) for _ in range(20)]
    index = make_index(bank, [1] * 30)
    embedder = ScriptedEmbedder({"d": np.tile(axis(0), (40, 1))})
    result = Matcher(embedder, index, threshold=0.8, num_chunks=5)([doc("d")])
    assert [row.chunk for row in result.rows] == [0, 1, 2, 3, 4, 5]
    assert len({row.template_id for row in result.rows}) == 6
    assert all(int(row.template_id[1:]) < 10 and row.score >= 0.8 for row in result.rows)
    assert result.matched_documents == 1 and result.vectors == 6 and result.vectors_without_match == 0


def test_vectors_without_candidates_are_counted_not_filled():
    rng = np.random.default_rng(1)
    bank = [near(0, 0.9, rng) for _ in range(3)] + [near(0, 0.2, rng) for _ in range(20)]
    index = make_index(bank, [1] * 23)
    embedder = ScriptedEmbedder({"three": np.tile(axis(0), (30, 1)), "none": np.tile(axis(5), (30, 1))})
    result = Matcher(embedder, index, threshold=0.8, num_chunks=5)([doc("three"), doc("none")])
    assert sorted(row.template_id for row in result.rows) == ["t0", "t1", "t2"]
    assert result.all_taken == 3  # three vectors found only templates already chosen
    assert result.no_candidate == 6  # the second document: nothing above the threshold
    assert result.matched_documents == 1 and result.documents == 2


def test_local_vectors_find_templates_for_their_part_of_the_document():
    rng = np.random.default_rng(2)
    bank = [near(1, 0.95, rng) for _ in range(3)] + [near(2, 0.95, rng) for _ in range(3)]
    index = make_index(bank, [1] * 6)
    # First half about direction 1, second half about direction 2.
    tokens = np.concatenate([np.tile(axis(1), (50, 1)), np.tile(axis(2), (50, 1))])
    result = Matcher(ScriptedEmbedder({"d": tokens}), index, threshold=0.8, num_chunks=4, sigma=0.05)([doc("d")])
    by_chunk = {row.chunk: int(row.template_id[1:]) for row in result.rows}
    # The global vector is halfway between (cosine about 0.67): below the threshold.
    assert 0 not in by_chunk and result.no_candidate == 1
    assert by_chunk[1] < 3 and by_chunk[2] < 3  # centres at 20 % and 40 %: first half
    assert by_chunk[3] >= 3 and by_chunk[4] >= 3  # centres at 60 % and 80 %: second half


def test_selection_is_seeded_per_document_not_per_batch():
    rng = np.random.default_rng(3)
    bank = [near(0, 0.9, rng) for _ in range(40)]
    index = make_index(bank, [1 + i % 3 for i in range(40)])
    tokens = {f"d{i}": np.tile(axis(0), (20, 1)) for i in range(6)}
    matcher = Matcher(ScriptedEmbedder(tokens), index, threshold=0.5, candidates=40, seed=7)
    together = matcher([doc(f"d{i}") for i in range(6)]).rows
    alone = [row for i in reversed(range(6)) for row in matcher([doc(f"d{i}")]).rows]
    assert sorted(together, key=lambda r: (r.document_id, r.chunk)) == sorted(alone, key=lambda r: (r.document_id, r.chunk))
    # Same tokens, different ids: different draws.
    assert {r.template_id for r in together if r.document_id == "d0"} != {r.template_id for r in together if r.document_id == "d1"}
    other_seed = Matcher(ScriptedEmbedder(tokens), index, threshold=0.5, candidates=40, seed=8)([doc("d0")]).rows
    assert [r.template_id for r in other_seed] != [r.template_id for r in together if r.document_id == "d0"]


def test_the_draw_does_not_depend_on_score_order_or_the_banks_row_order():
    # Twelve templates at one cosine from the documents (ties, as float noise leaves
    # near-ties), in two banks that hold them in opposite orders: FAISS returns the
    # candidates in opposite orders, and each document must still get the same templates.
    rng = np.random.default_rng(5)
    bank = [near(0, 0.9, rng) for _ in range(12)]
    ids = [f"t{i:02d}" for i in range(12)]
    forward = make_index(bank, [1] * 12, ids)
    backward = make_index(bank[::-1], [1] * 12, ids[::-1])
    tokens = {f"d{i}": np.tile(axis(0), (20, 1)) for i in range(8)}
    documents = [doc(f"d{i}") for i in range(8)]
    rows = [Matcher(ScriptedEmbedder(tokens), index, threshold=0.5, candidates=12, seed=3)(documents).rows
            for index in (forward, backward)]
    assert [(r.document_id, r.chunk, r.template_id) for r in rows[0]] == [(r.document_id, r.chunk, r.template_id) for r in rows[1]]
    assert len(rows[0]) == 8 * 6


def test_chosen_complexity_follows_the_target_distribution():
    rng = np.random.default_rng(4)
    # 30 simple templates for every complex one: unweighted sampling would pick
    # complexity 1 almost always.
    complexities = [1] * 60 + [2] * 2 + [3] * 2
    bank = [near(0, 0.9, rng) for _ in complexities]
    index = make_index(bank, complexities)
    tokens = {f"d{i}": np.tile(axis(0), (20, 1)) for i in range(600)}
    target = {1: 0.5, 2: 0.3, 3: 0.2}
    matcher = Matcher(ScriptedEmbedder(tokens), index, threshold=0.5, candidates=64, num_chunks=0, target=target)
    result = matcher([doc(f"d{i}") for i in range(600)])
    share = {c: n / sum(result.chosen_complexity.values()) for c, n in result.chosen_complexity.items()}
    for level, p in target.items():
        assert abs(share[level] - p) < 0.06, (share, target)


def test_default_target_is_the_banks_own_distribution():
    rng = np.random.default_rng(5)
    complexities = [1] * 30 + [2] * 10
    index = make_index([near(0, 0.9, rng) for _ in complexities], complexities)
    matcher = Matcher(ScriptedEmbedder({}), index, threshold=0.5)
    assert matcher.target == {1: 0.75, 2: 0.25}


def test_templates_outside_the_target_are_never_chosen():
    rng = np.random.default_rng(6)
    index = make_index([near(0, 0.9, rng) for _ in range(8)], [1] * 8)
    result = Matcher(ScriptedEmbedder({"d": np.tile(axis(0), (20, 1))}), index, threshold=0.5, target={2: 1.0})([doc("d")])
    assert result.rows == [] and result.off_target == 6


def test_choose_draws_complexity_then_template():
    rng = np.random.default_rng(0)
    positions = np.arange(5)
    complexities = np.array([1, 1, 1, 1, 2])
    picks = Counter(choose(positions, complexities, {1: 0.5, 2: 0.5}, rng) for _ in range(4000))
    assert abs(picks[4] / 4000 - 0.5) < 0.04  # the lone complexity-2 template: half the draws
    assert choose(positions, complexities, {3: 1.0}, rng) is None


def test_an_index_from_another_embedder_is_refused():
    index = make_index([axis(0)], [1])
    other = ScriptedEmbedder({})
    other.identity = EmbedderIdentity("other", "other", DIM, 64, (0.3, -0.2, 0.1))
    with pytest.raises(UserError, match="same embedder"):
        Matcher(other, index, threshold=0.5)


def test_thresholds_are_calibrated_per_embedder():
    assert calibrated_threshold("fineinstructions/instruction_template_retrieval_embedding") == 0.865
    assert 0 < calibrated_threshold("sentence-transformers/all-MiniLM-L6-v2") < 1
    with pytest.raises(UserError, match="--threshold"):
        calibrated_threshold("BAAI/bge-m3")
    with pytest.raises(UserError, match="--threshold"):
        Matcher(ScriptedEmbedder({}), make_index([axis(0)], [1]))  # "scripted" has none


def test_target_distribution_settings(tmp_path):
    bank = np.array([1, 1, 2, 4])
    assert target_distribution("bank", bank) is None
    assert target_distribution("uniform", bank) == {1: 1.0, 2: 1.0, 4: 1.0}
    path = tmp_path / "target.json"
    path.write_text(json.dumps({"1": 0.6, "2": 0.4}))
    assert target_distribution(str(path), bank) == {1: 0.6, 2: 0.4}
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="complexity → weight"):
        target_distribution(str(path), bank)
    with pytest.raises(UserError, match="not 'bank', 'uniform' or an existing file"):
        target_distribution("/no/such/file.json", bank)


def test_a_run_that_matches_nothing_says_why_and_what_to_change(tmp_path):
    from fineinstructions.config import load_config
    from fineinstructions.execution.match import run_match

    rng = np.random.default_rng(0)
    index = make_index([axis(0), axis(1)], [1, 1])
    index.save(tmp_path / "index")
    documents = tmp_path / "docs.jsonl"
    documents.write_text(json.dumps({"id": "d", "text": "far"}) + "\n")
    embedder = ScriptedEmbedder({"far": np.stack([near(5, 0.99, rng)] * 4)})
    said = []
    stats = run_match([documents], tmp_path / "index", tmp_path / "m", load_config(overrides=["match.threshold=0.8"]),
                      embedder=embedder, show_progress=False, log=said.append)
    assert stats["match"]["out"] == 0
    advice = said[-1]
    assert "none of the 1 documents matched any of the 2 templates at threshold 0.8" in advice
    assert "the best scores seen were" in advice and "fix: lower the threshold" in advice
    best = max(stats["match"]["best_score_histogram"], key=float)
    assert float(best) < 0.8
