"""The template index: kinds, settings, save/load, and refusing another embedder."""

from types import SimpleNamespace

import numpy as np
import pytest

from fineinstructions.config import IndexConfig
from fineinstructions.errors import UserError
from fineinstructions.models.index import (
    IndexBuilder,
    TemplateIndex,
    choose_kind,
    default_nlist,
    default_pq_bytes,
    settings_for,
)
from support.embedders import DIM, CountingEmbedder, identity, unit_vectors, write_bank


def build(kind, vectors, **config):
    settings = settings_for(len(vectors), DIM, len(vectors), IndexConfig(kind=kind, **config))
    builder = IndexBuilder(settings, identity())
    if builder.needs_training:
        builder.train(vectors)
    for start in range(0, len(vectors), 100):  # added in batches, as the job streams them
        block = vectors[start : start + 100]
        builder.add(block, [f"t{i}" for i in range(start, start + len(block))], [1 + i % 3 for i in range(start, start + len(block))])
    return builder.finish()


def test_auto_kind_follows_the_bank_size():
    config = IndexConfig()
    assert choose_kind(50_000, config) == "flat"
    assert choose_kind(100_000, config) == "flat"
    assert choose_kind(100_001, config) == "hnsw"
    assert choose_kind(2_000_001, config) == "ivfsq"
    assert choose_kind(18_000_000, config) == "ivfpq"
    assert choose_kind(10, IndexConfig(kind="hnsw")) == "hnsw"


def test_default_cells_and_code_size():
    assert default_nlist(1_000_000, 1_000_000) == 4000
    assert default_nlist(1_000_000, 100_000) == 100_000 // 39  # enough training vectors per cell
    assert default_pq_bytes(384) == 96 and default_pq_bytes(1024) == 256
    assert default_pq_bytes(1000) == 250  # d/4 when it divides d


def test_an_ivf_index_needs_enough_training_templates():
    with pytest.raises(UserError, match="index.kind=flat"):
        settings_for(500, DIM, 500, IndexConfig(kind="ivf", nlist=1000))
    with pytest.raises(UserError, match="must divide"):
        settings_for(5000, DIM, 5000, IndexConfig(kind="ivfpq", pq_bytes=5))


def test_flat_search_is_exact_cosine():
    bank = unit_vectors(300)
    queries = unit_vectors(20, seed=1)
    index = build("flat", bank)
    scores, positions = index.search(queries, 6)
    expected = np.argsort(-(queries @ bank.T), axis=1)[:, :6]
    assert (positions == expected).all()
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ bank.T, expected, axis=1), atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "ivfsq", "ivfpq", "hnsw"])
def test_approximate_kinds_find_most_true_neighbours(kind):
    # Clustered data, like real embeddings: every approximate kind must find most of
    # the exact top 6 with generous search settings.
    rng = np.random.default_rng(3)
    centres = unit_vectors(20, seed=4)
    bank = centres[rng.integers(0, 20, 2000)] + 0.3 * unit_vectors(2000, seed=5)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries = bank[:50] + 0.05 * unit_vectors(50, seed=6)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = build(kind, bank.astype(np.float32), nlist=20, nprobe=10, pq_bytes=16)
    _, found = index.search(queries, 6)
    truth = np.argsort(-(queries @ bank.T), axis=1)[:, :6]
    recall = np.mean([len(set(f) & set(t)) / 6 for f, t in zip(found.tolist(), truth.tolist(), strict=False)])
    assert recall >= (0.6 if kind == "ivfpq" else 0.9), recall
    assert found[:, 0].tolist().count(-1) == 0


def test_save_and_load_round_trip(tmp_path):
    bank = unit_vectors(200)
    index = build("ivf", bank, nlist=4, nprobe=2)
    index.save(tmp_path / "index")
    loaded = TemplateIndex.load(tmp_path / "index", embedder=identity(), nprobe=4)
    assert len(loaded) == 200 and loaded.ids[7] == "t7" and loaded.complexity[7] == 2
    assert loaded.settings.kind == "ivf" and loaded.settings.nprobe == 4
    assert TemplateIndex.load(tmp_path / "index").settings.nprobe == 2  # the build's own unless overridden
    queries = unit_vectors(5, seed=9)
    index_all = build("flat", bank)
    # nprobe = nlist visits every cell: the same answers as exact search.
    np.testing.assert_array_equal(loaded.search(queries, 3)[1], index_all.search(queries, 3)[1])


def test_loading_with_another_embedder_is_refused(tmp_path):
    build("flat", unit_vectors(10)).save(tmp_path / "index")
    with pytest.raises(UserError, match="was built with the embedder 'test-embedder'") as error:
        TemplateIndex.load(tmp_path / "index", embedder=identity(probe=(0.0, 1.0, 0.0), name="other"))
    assert "embed.model=test-embedder" in str(error.value)
    with pytest.raises(UserError, match="not comparable"):
        TemplateIndex.load(tmp_path / "index", embedder=identity(dimension=64))
    # The same weights under another name (a local copy of the model) are accepted.
    TemplateIndex.load(tmp_path / "index", embedder=identity(name="/models/copy"))


def test_a_folder_without_an_index_says_how_to_build_one(tmp_path):
    with pytest.raises(UserError, match="fineinstructions index TEMPLATES_DIR"):
        TemplateIndex.load(tmp_path)


def test_adding_before_training_is_an_error():
    settings = settings_for(1000, DIM, 1000, IndexConfig(kind="ivf", nlist=8))
    builder = IndexBuilder(settings, identity())
    with pytest.raises(RuntimeError, match="train"):
        builder.add(unit_vectors(3), ["a", "b", "c"], [1, 1, 1])


def test_bytes_per_template_is_recorded(tmp_path):
    build("flat", unit_vectors(100)).save(tmp_path / "i")
    import json

    meta = json.loads((tmp_path / "i" / "index.json").read_text())
    assert meta["bytes_per_template"] == pytest.approx(4 * DIM, rel=0.05)
    assert meta["embedder"]["name"] == "test-embedder"


def test_settings_namespace_config_is_accepted():
    # The benchmark passes a plain namespace: the builder needs only these attributes.
    config = SimpleNamespace(kind="ivf", flat_limit=0, ivfpq_above=0, nlist=None, nprobe=8, pq_bytes=None, hnsw_m=16, hnsw_ef_search=32)
    settings = settings_for(10_000, DIM, 10_000, config)
    assert settings.nlist == 10_000 // 39 and settings.nprobe == 8  # at least 39 training vectors per cell


def test_index_resumes_costs_nothing_when_finished_and_keeps_what_match_rows_carry(tmp_path):
    from fineinstructions.config import load_config
    from fineinstructions.execution.index import run_index

    bank = write_bank(tmp_path / "bank", 10)
    quiet = {"show_progress": False, "log": lambda m: None}
    embedder = CountingEmbedder()
    first = run_index([bank], tmp_path / "index", load_config(), embedder=embedder, **quiet)
    assert first["index"]["out"] == 10 and embedder.embedded == 10
    index = TemplateIndex.load(tmp_path / "index")
    assert index.template_details(3) == {"query_id": "q3", "template": "what is <fi>thing 3</fi>", "variables": ("thing 3",)}
    again = CountingEmbedder()
    said = []
    assert run_index([bank], tmp_path / "index", load_config(), embedder=again, show_progress=False, log=said.append) == first
    assert again.embedded == 0 and "finished in an earlier run" in said[-1]
    other = write_bank(tmp_path / "other", 3, prefix="u")
    with pytest.raises(UserError, match="differs in: inputs"):
        run_index([other], tmp_path / "index", load_config(), embedder=again, **quiet)
