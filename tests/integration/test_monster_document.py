"""A monster document costs what its cap says: a 5 MB page is embedded up to
``embed.max_tokens`` tokens (by default), counted as truncated, and matched."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fineinstructions.config import load_config
from fineinstructions.interface.cli import main
from fineinstructions.io import read_documents
from support.data import DOCUMENTS

pytestmark = pytest.mark.slow


def test_a_five_megabyte_document_is_embedded_up_to_the_default_cap(tmp_path, bank):  # noqa: F811
    cap = load_config("embedded").embed.max_tokens
    assert cap == 32768
    runner = CliRunner()
    assert runner.invoke(main, ["index", str(bank), "-o", str(tmp_path / "index")]).exit_code == 0
    texts = [d.text for d in read_documents([DOCUMENTS])][:200]
    monster = ""
    while len(monster) < 5_000_000:
        monster += "\n\n".join(texts)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "monster", "text": monster[:5_000_000]}) + "\n"
                    + json.dumps({"id": "small", "text": texts[0]}) + "\n")
    result = runner.invoke(main, ["match", str(docs), "--index", str(tmp_path / "index"), "-o", str(tmp_path / "m"),
                                  "--threshold", "0.2"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "m" / "stats.json").read_text())["match"]
    assert stats["truncated_documents"] == 1
    assert stats["tokens_seen"] <= cap + 2 + 512  # the monster's cap (+ its special tokens) and the small one
    assert stats["text_tokens"] > 1_000_000
