"""Progress lines and the rejects file."""

import io
import json

import pytest

from fineinstructions.execution.progress import Progress
from fineinstructions.execution.rejects import RejectsFile
from fineinstructions.records import RejectRow


def test_progress_prints_rates_when_enabled_and_nothing_when_quiet():
    stream = io.StringIO()
    progress = Progress("templatize", unit="queries", stream=stream, interval=0)
    progress.update(10, tokens=500, extra="7 templates")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # not a terminal: plain lines, no carriage returns
    assert lines[-1].startswith("templatize: 10 queries, ")
    assert "queries/s" in lines[-1] and "tok/s" in lines[-1] and lines[-1].endswith("7 templates")
    quiet = io.StringIO()
    silent = Progress("x", stream=quiet, enabled=False, interval=0)
    silent.update(5)
    silent.close()
    assert quiet.getvalue() == ""


def reject(i: int) -> RejectRow:
    return RejectRow(stage="s", input_id=f"q{i}", reason="r", detail="d", input="x")


def test_rejects_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "out.rejects.jsonl"
    with RejectsFile(path) as rejects:
        rejects.write([reject(1), reject(2)])
        assert not path.exists()
        assert (tmp_path / "out.rejects.jsonl.tmp").read_text().count("\n") == 2  # flushed as it goes
    assert [json.loads(line)["input_id"] for line in path.read_text().splitlines()] == ["q1", "q2"]
    assert not (tmp_path / "out.rejects.jsonl.tmp").exists()


def test_rejects_file_left_by_an_error_is_only_the_temporary(tmp_path):
    path = tmp_path / "out.rejects.jsonl"
    with pytest.raises(RuntimeError):
        with RejectsFile(path) as rejects:
            rejects.write([reject(1)])
            raise RuntimeError("crash")
    assert not path.exists() and (tmp_path / "out.rejects.jsonl.tmp").exists()
