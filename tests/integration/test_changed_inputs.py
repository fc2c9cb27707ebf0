"""A resume never silently reads a changed input: an input fixed in place after a failed
run is read whole when nothing was finished, and refused (restore it, or --overwrite)
when finished work was made from the old rows. Real documents, the embedded embedder."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from fineinstructions.interface.cli import main
from fineinstructions.io import read_documents
from support.data import DOCUMENTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index(bank, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("index") / "index"
    result = CliRunner().invoke(main, ["index", str(bank), "-o", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def six_documents(path, broken_line: int | None):
    picked = [d for d in read_documents([DOCUMENTS]) if len(d.text) < 3000][:6]
    lines = [json.dumps({"id": d.id, "text": d.text, "source": d.source}) for d in picked]
    if broken_line is not None:
        lines[broken_line - 1] = '{"id": "broken", "text": "cut off'
    path.write_text("".join(line + "\n" for line in lines))
    return picked


def match(docs, index, out, *extra):
    return CliRunner().invoke(main, ["match", str(docs), "--index", str(index), "-o", str(out), "--threshold", "0.2",
                                     "--set", "instantiate.shard_size=1", *extra])


def matched_documents(out) -> int:
    return json.loads((out / "stats.json").read_text())["match"]["in"]


def test_an_input_fixed_in_place_after_a_failed_run_is_read_whole(tmp_path, index):
    docs, out = tmp_path / "docs.jsonl", tmp_path / "matches"
    six_documents(docs, broken_line=1)  # the first shard fails: nothing is finished
    first = match(docs, index, out)
    assert first.exit_code == 2 and "line 1" in first.output, first.output
    six_documents(docs, broken_line=None)  # fixed in place: a longer line, other byte ranges
    again = match(docs, index, out)
    assert again.exit_code == 0, again.output
    assert matched_documents(out) == 6


def test_a_resume_over_a_changed_input_is_refused_with_the_ways_on(tmp_path, index):
    docs, out = tmp_path / "docs.jsonl", tmp_path / "matches"
    six_documents(docs, broken_line=5)  # shards 0-3 finish, shard 4 fails
    first = match(docs, index, out)
    assert first.exit_code == 2 and "line 5" in first.output, first.output
    six_documents(docs, broken_line=None)
    again = match(docs, index, out)
    assert again.exit_code == 2, again.output
    assert "docs.jsonl changed since the first run" in again.output
    assert "restore the inputs" in again.output and "--overwrite" in again.output
    fresh = match(docs, index, out, "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert matched_documents(out) == 6


def test_touching_an_input_without_changing_it_after_a_finished_run_is_refused_too(tmp_path, index):
    # Size and time are what is compared: a file rewritten with the same bytes counts as
    # changed (the message says how to go on); an untouched one resumes as finished.
    docs, out = tmp_path / "docs.jsonl", tmp_path / "matches"
    six_documents(docs, broken_line=None)
    assert match(docs, index, out).exit_code == 0
    assert match(docs, index, out).exit_code == 0
    stat = docs.stat()
    os.utime(docs, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert match(docs, index, out).exit_code == 2
