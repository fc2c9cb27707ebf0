"""Index and match with the real embedded embedder (all-MiniLM-L6-v2) on real documents
from ../shared/data: token embeddings, windows over long documents, the index and match
commands end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main
from fineinstructions.io import read_documents, read_rows
from fineinstructions.models.embedder import SentenceTransformerEmbedder
from fineinstructions.models.index import TemplateIndex
from fineinstructions.records import MatchRow, TemplateRow
from support.data import BANK, DOCUMENTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder("embedded")


@pytest.fixture(scope="module")
def documents():
    return list(read_documents([DOCUMENTS]))


def test_short_texts_get_the_models_own_embeddings(embedder):
    texts = ["A recipe for lemon cake.", "The match ended in a draw after extra time in the rain."]
    ours = embedder.embed(texts)
    theirs = embedder._st.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_long_documents_are_embedded_whole_in_overlapping_windows(embedder, documents):
    longest = max(documents, key=lambda d: len(d.text))
    item = embedder.token_embeddings([longest.text])[0]
    tokens = embedder.count_tokens([longest.text])[0]
    assert tokens > 4 * embedder.window_content  # several windows
    assert item.vectors.shape == (tokens + 2, embedder.dimension)  # every token, plus [CLS] and [SEP]
    assert item.text_tokens == item.tokens_seen == tokens + 2 and not item.truncated
    # Tokens well inside the first window have exactly that window's embeddings.
    ids = embedder._token_ids([longest.text])[0]
    first = embedder._forward([embedder._prefix + ids[: embedder.window_content] + embedder._suffix])[0]
    np.testing.assert_allclose(item.vectors[:100], first[:100], atol=1e-4)
    # Batched with short documents, the long one gets the same embeddings.
    together = embedder.token_embeddings([documents[0].text, longest.text, documents[1].text])[1]
    np.testing.assert_allclose(together.vectors, item.vectors, atol=1e-4)


def test_max_tokens_cuts_long_documents_and_records_it(documents):
    short = SentenceTransformerEmbedder("embedded", max_tokens=300)
    longest = max(documents, key=lambda d: len(d.text))
    item = short.token_embeddings([longest.text])[0]
    assert item.tokens_seen == 302 and item.text_tokens > 302 and item.truncated
    assert item.vectors.shape[0] == 302


def test_index_and_match_commands_on_real_documents(tmp_path, bank, documents):
    runner = CliRunner()
    index_dir = tmp_path / "index"
    result = runner.invoke(main, ["index", str(bank), "-o", str(index_dir)])
    assert result.exit_code == 0, result.output
    assert f"indexed {len(BANK)} templates (flat" in result.output
    index = TemplateIndex.load(index_dir)
    assert len(index) == len(BANK) and index.identity.model == "sentence-transformers/all-MiniLM-L6-v2"

    sample = tmp_path / "docs.jsonl"
    picked = [d for d in documents if d.source in ("cnn-dailymail", "xsum-bbc")][:12] + [
        d for d in documents if d.source == "wikipedia"
    ][:2]
    sample.write_text("".join(json.dumps({"id": d.id, "text": d.text, "source": d.source}) + "\n" for d in picked))
    out = tmp_path / "matches"
    # A low threshold so this small bank matches news articles.
    result = runner.invoke(main, ["match", str(sample), "--index", str(index_dir), "-o", str(out), "--threshold", "0.2"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())["match"]
    rows = list(read_rows([out], MatchRow))
    assert stats["in"] == len(picked) and stats["matches"] == len(rows) > 0
    assert stats["in"] == stats["out"] + sum(stats["skipped"].values())
    assert stats["vectors"] == 6 * len(picked)
    assert stats["vectors"] == len(rows) + sum(stats["vectors_without_match"].values())
    assert stats["tokens_seen"] == stats["text_tokens"] > 0 and stats["documents_per_s"] > 0
    ids = {t.id: t for t in read_rows([bank], TemplateRow)}
    for document_id in {r.document_id for r in rows}:
        mine = [r for r in rows if r.document_id == document_id]
        assert len({r.template_id for r in mine}) == len(mine) <= 6  # never a template twice
        assert len({r.chunk for r in mine}) == len(mine)  # one per vector
    assert all(r.score >= 0.2 and r.template_id in ids for r in rows)
    # News about sport or crime should find the sports or court template somewhere.
    found = {ids[r.template_id].template for r in rows}
    assert found & {BANK[1][0], BANK[10][0], BANK[2][0], BANK[8][0]}

    # The same command again gives the same rows (seeded per document).
    again = tmp_path / "again"
    result = runner.invoke(main, ["match", str(sample), "--index", str(index_dir), "-o", str(again), "--threshold", "0.2"])
    assert result.exit_code == 0, result.output
    assert list(read_rows([again], MatchRow)) == rows


def tiny_sentence_transformer(folder: Path) -> Path:
    """A small randomly initialised BERT saved as a sentence-transformers folder, with the
    embedded model's tokenizer: a second, different embedder available offline."""
    import shutil

    from transformers import BertConfig, BertModel

    from fineinstructions.models.embedded import embedded_embedder_path

    source = embedded_embedder_path()
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return folder


def test_any_sentence_transformers_folder_works_and_another_embedder_is_refused(tmp_path, bank, documents):
    from fineinstructions.config import load_config
    from fineinstructions.errors import UserError
    from fineinstructions.execution.index import run_index
    from fineinstructions.execution.match import run_match

    folder = tiny_sentence_transformer(tmp_path / "tiny")
    tiny = SentenceTransformerEmbedder(str(folder))
    assert tiny.dimension == 32 and tiny.max_seq_length == 64 and tiny.identity.model == str(folder)
    # Its 64-token window makes every real document a long one.
    item = tiny.token_embeddings([documents[0].text])[0]
    assert item.vectors.shape == (tiny.count_tokens([documents[0].text])[0] + 2, 32)

    quiet = {"show_progress": False, "log": lambda message: None}
    config = load_config(overrides=[f"embed.model={json.dumps(str(folder))}"])
    run_index([bank], tmp_path / "index", config, **quiet)
    stats = run_match([DOCUMENTS], tmp_path / "index", tmp_path / "m1", load_config(overrides=[f"embed.model={json.dumps(str(folder))}", "match.threshold=0.5"]), limit=3, **quiet)
    assert stats["match"]["in"] == 3 and stats["match"]["embedder"] == str(folder)
    # The embedded default cannot search an index the tiny model built.
    with pytest.raises(UserError, match=r"embed\.model=") as error:
        run_match([DOCUMENTS], tmp_path / "index", tmp_path / "m2", load_config(), limit=1, **quiet)
    assert str(folder) in str(error.value)
    # And an embedder with no calibrated threshold asks for one.
    with pytest.raises(UserError, match="--threshold"):
        run_match([DOCUMENTS], tmp_path / "index", tmp_path / "m3", config, limit=1, **quiet)
