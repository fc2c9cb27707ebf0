"""Progress lines and the rejects file."""

import io
import json
import threading
import time

import pytest

from fineinstructions.execution.progress import Progress
from fineinstructions.execution.rejects import RejectsFile
from fineinstructions.records import RejectRow


def test_progress_prints_rates_when_enabled_and_nothing_when_quiet():
    stream = io.StringIO()
    progress = Progress("templatize", unit="queries", stream=stream, interval=60)
    progress.update(10, tokens=500, extra="7 templates")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # not a terminal: plain lines, no carriage returns; the final one
    assert lines[-1].startswith("templatize: 10 queries, ")
    assert "queries/s" in lines[-1] and "tok/s" in lines[-1] and lines[-1].endswith("7 templates")
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    silent = Progress("x", stream=quiet, enabled=False, interval=0.01)
    assert not silent.running  # no thread at all
    silent.update(5)
    time.sleep(0.05)
    silent.close()
    assert quiet.getvalue() == ""


def wait_for_lines(stream: io.StringIO, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = stream.getvalue().splitlines()
        if len(lines) >= count:
            return lines
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} progress lines after {timeout}s: {stream.getvalue()!r}")


def test_progress_lines_keep_coming_without_updates():
    stream = io.StringIO()
    progress = Progress("judge", unit="pairs", stream=stream, interval=0.05)
    progress.update(3, extra="3 judged")
    lines = wait_for_lines(stream, 3)  # no update since: the heartbeat still prints
    progress.close()
    assert all(line.startswith("judge: 3 pairs, ") and line.endswith("3 judged") for line in lines)
    assert "ETA" not in lines[0]  # no total, no ETA
    assert "elapsed " in lines[0]


def test_progress_shows_eta_and_share_when_the_total_is_known():
    stream = io.StringIO()
    progress = Progress("index", total=100, unit="templates", stream=stream, interval=0.05)
    progress.update(25)
    line = wait_for_lines(stream, 1)[0]
    assert line.startswith("index: 25/100 templates (25.0%), ")
    assert "templates/s" in line and ", ETA " in line and "ETA ?" not in line
    progress.close()
    final = stream.getvalue().splitlines()[-1]
    assert final.startswith("index: 25/100 templates") and "ETA" not in final


def test_progress_total_can_be_set_after_construction():
    stream = io.StringIO()
    progress = Progress("match", stream=stream, interval=60)
    assert progress.total is None
    progress.total = 10
    progress.update(5)
    progress.set_total(20)  # raised once more inputs are planned
    progress.close()
    assert stream.getvalue().splitlines()[-1].startswith("match: 5/20 rows (25.0%)")


def test_progress_eta_is_unknown_before_the_first_row():
    progress = Progress("x", total=10, enabled=False)
    assert "ETA ?" in progress.line()


def test_close_stops_the_thread_and_is_idempotent():
    stream = io.StringIO()
    progress = Progress("pack", stream=stream, interval=0.02)
    assert progress.running
    wait_for_lines(stream, 1)
    progress.close()
    assert not progress.running
    printed = stream.getvalue()
    time.sleep(0.1)
    progress.close()
    assert stream.getvalue() == printed  # nothing after close, and no second final line
    with Progress("ctx", stream=io.StringIO(), interval=0.02) as inside:
        assert inside.running
    assert not inside.running


def test_updates_from_many_threads_are_all_counted():
    progress = Progress("x", stream=io.StringIO(), interval=0.01)

    def work():
        for _ in range(1000):
            progress.update(1, tokens=2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.close()
    assert (progress.done, progress.tokens) == (4000, 8000)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_tqdm_bar():
    stream = FakeTerminal()
    progress = Progress("templatize", total=50, unit="queries", stream=stream, interval=0.02)
    progress.update(10, tokens=100, extra="7 templates")
    time.sleep(0.1)
    progress.close()
    out = stream.getvalue()
    assert "\r" in out  # redrawn in place
    assert "templatize" in out and "10/50" in out and "7 templates" in out
    assert out.endswith("\n")


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        Progress("x", interval=0)


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
