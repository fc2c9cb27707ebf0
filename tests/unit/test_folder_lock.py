"""One process per output folder: a second run on a folder in use exits 2 naming the
holder; the hold ends with its process, however it ends (kill -9 included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fineinstructions.errors import UserError
from fineinstructions.execution.outputs import LOCK_NAME, folder_lock
from fineinstructions.interface.cli import main

HOLD = """
import sys, time
from fineinstructions.execution.outputs import folder_lock
with folder_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(120)
"""


def holder(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_folder_held_by_a_live_process_is_refused_naming_it(tmp_path):
    child = holder(tmp_path / "out")
    try:
        with pytest.raises(UserError) as caught:
            with folder_lock(tmp_path / "out", "match"):
                pass
        message = str(caught.value)
        assert f"pid {child.pid}" in message and "fineinstructions run" in message
        assert "fix:" in message
    finally:
        child.kill()
        child.wait()


def test_the_hold_ends_with_its_process_even_after_kill_9(tmp_path):
    child = holder(tmp_path / "out")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with folder_lock(tmp_path / "out", "match"):
        assert f"pid {os.getpid()}" in (tmp_path / "out" / LOCK_NAME).read_text()
    with folder_lock(tmp_path / "out", "match"):  # released when the block ends
        pass


def test_a_second_command_on_a_folder_in_use_exits_2_and_the_first_is_untouched(tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"text": "how do I repot a cactus?"}) + "\n")
    out = tmp_path / "templates"
    child = holder(out)
    try:
        result = CliRunner().invoke(main, ["templatize", str(queries), "-o", str(out), "--set", "templatize.llm.backend=fake"])
    finally:
        child.kill()
        child.wait()
    assert result.exit_code == 2, result.output
    assert "is in use by" in result.output and f"pid {child.pid}" in result.output
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def test_a_run_folder_with_only_its_lock_counts_as_empty(tmp_path):
    out = tmp_path / "run"
    with folder_lock(out, "run"):
        pass
    from fineinstructions.execution.pipeline import _prepare

    _prepare(out, {"queries": [], "templates": [], "documents": [], "config_sha256": "x"}, False, lambda m: None)
    assert (out / "run.json").exists()
