"""Failures of the machine are messages, not tracebacks: a full disk, a read-only
folder, an output path through a file each exit 2 with the path and the fix, and after
the fix the same command completes with the rows a clean run gives.

A full and a read-only disk are real: a small tmpfs, mounted for the test (root only;
skipped elsewhere). The real embedded embedder indexes a small bank."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fineinstructions.errors import os_error_message
from fineinstructions.interface.cli import main


@pytest.fixture
def small_disk():
    mount = Path("/tmp") / f"fi-small-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True).returncode:
        mount.rmdir()
        pytest.skip("mounting a tmpfs needs root")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)

    yield mount, remount
    subprocess.run(["umount", str(mount)], check=False)
    shutil.rmtree(mount, ignore_errors=True)


def ids(index: Path) -> list[str]:
    return pq.read_table(index / "templates.parquet", columns=["id"]).column(0).to_pylist()


@pytest.mark.slow
def test_a_full_disk_is_a_message_and_the_rerun_after_freeing_space_completes(small_disk, bank, tmp_path):  # noqa: F811
    mount, remount = small_disk
    runner = CliRunner()
    full = runner.invoke(main, ["index", str(bank), "-o", str(mount / "index")])
    assert full.exit_code == 2, full.output
    assert "error: cannot write" in full.output and "full" in full.output and "fix: free space" in full.output
    assert "Traceback" not in full.output
    remount("size=20m")
    again = runner.invoke(main, ["index", str(bank), "-o", str(mount / "index")])
    assert again.exit_code == 0, again.output
    clean = runner.invoke(main, ["index", str(bank), "-o", str(tmp_path / "index")])
    assert clean.exit_code == 0, clean.output
    assert ids(mount / "index") == ids(tmp_path / "index")


@pytest.mark.slow
def test_a_read_only_output_folder_is_a_message(small_disk, bank):  # noqa: F811
    mount, remount = small_disk
    remount("ro")
    result = CliRunner().invoke(main, ["index", str(bank), "-o", str(mount / "index")])
    assert result.exit_code == 2, result.output
    assert f"cannot write {mount / 'index'}" in result.output and "Read-only file system" in result.output
    assert "fix: choose an output folder you can write to" in result.output


def test_an_output_path_through_a_file_is_a_message(tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"text": "how do I repot a cactus?"}) + "\n")
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(main, ["templatize", str(queries), "-o", str(tmp_path / "a-file" / "out"),
                                       "--set", "templatize.llm.backend=fake"])
    assert result.exit_code == 2, result.output
    assert "a part of that path is a file" in result.output and "fix:" in result.output


def test_each_machine_failure_has_its_fix():
    import sqlite3

    assert "fix: free space" in os_error_message(OSError(errno.ENOSPC, "No space left on device", "/d/part-00000.parquet"))
    assert "/d/part-00000.parquet" in os_error_message(OSError(errno.ENOSPC, "No space left on device", "/d/part-00000.parquet"))
    assert "writable" in os_error_message(PermissionError(errno.EACCES, "Permission denied", "/d"))
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # as sqlite3 sets it (Python >= 3.11)
    assert "free space" in os_error_message(full)
    assert os_error_message(ValueError("a bug")) is None
    assert os_error_message(sqlite3.OperationalError("no such table: x")) is None
