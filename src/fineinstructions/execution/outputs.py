"""What an output folder may hold, and what ``--overwrite`` may delete.

Every command writes into a folder of its own making and marks it with a record file
(``run.json`` for ``run``, ``.shards/run.json`` for a stage, ``index.json`` for an index,
…). ``--overwrite`` deletes only what this package wrote there: the entries whose names it
gives, in a folder that holds its record. A user's file beside them stays. A folder that
holds an input of the same job is refused whatever the options, since overwriting it (or
reading it back as output) would lose the input.
"""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from fineinstructions.errors import UserError
from fineinstructions.io.formats import is_url


@dataclass(frozen=True)
class Layout:
    """The names a command writes in its output folder.

    ``records``: files that prove the folder is this command's (relative paths; any one
    is enough: a finished output holds one, an interrupted one another);
    ``names``: exact entry names; ``patterns``: regular expressions over entry names."""

    records: tuple[str, ...]
    names: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()

    def owns(self, name: str) -> bool:
        return name in self.names or any(re.fullmatch(p, name) for p in self.patterns)


def refuse_inputs_inside(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output folder that is, or holds, one of the job's own inputs."""
    out = Path(output).resolve()
    for path in inputs:
        text = str(path)
        if is_url(text):
            continue
        resolved = Path(text).resolve()
        if resolved == out or out in resolved.parents:
            raise UserError(
                f"the output folder {output} holds {text}, an input of this job; writing there would "
                "mix the output with it (and --overwrite would delete it).\n"
                "  fix: choose an output folder that holds none of the inputs, e.g. a new subfolder"
            )


def clear(folder: str | Path, layout: Layout, *, log: Callable[[str], None] | None = None) -> None:
    """``--overwrite``: delete what this package wrote in ``folder``, nothing else.

    Only a folder holding the layout's record is this command's output; in any other
    folder nothing is deleted (the caller's usual checks then decide whether it may be
    written into). Entries the layout does not name stay, and are logged."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder\n  fix: choose another output folder")
    ours = any((folder / record).exists() for record in layout.records)
    kept = []
    for path in sorted(folder.iterdir()):
        if path.name == LOCK_NAME:  # held by this process: deleting it would free the folder
            continue
        if not (ours and layout.owns(path.name)):
            kept.append(path.name)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if kept and log is not None:
        log(f"--overwrite deletes only what fineinstructions wrote; kept in {folder}: "
            f"{', '.join(kept[:5])}{' …' if len(kept) > 5 else ''}")


# The layouts of the commands' output folders.
STAGE_FOLDER = Layout(
    records=(".shards/run.json",),
    names=frozenset({".shards", ".work", "stats.json", "README.md"}),
    patterns=(r"part-\d{5}\.[a-z.]+", r"\.part-.*\.tmp", r"\..*\.tmp"),
)
TEMPLATIZE_FOLDER = Layout(
    records=(".work/inputs.json", "stats.json"),
    names=STAGE_FOLDER.names,
    patterns=STAGE_FOLDER.patterns,
)


def run_folder(stages: Iterable[str]) -> Layout:
    stages = tuple(stages)
    names = {*stages, "run.json", "stats.json", "report.html"}
    for stage in stages:
        names |= {f"{stage}.cache.sqlite", f"{stage}.cache.sqlite-wal", f"{stage}.cache.sqlite-shm",
                  f"{stage}.cache.d", f"{stage}.rejects.jsonl"}
    return Layout(records=("run.json",), names=frozenset(names), patterns=(r"\..*\.tmp",))


INDEX_FOLDER = Layout(
    records=("index.json", ".work/vectors/.shards/run.json"),
    names=frozenset({"index.json", "index.faiss", "templates.parquet", "stats.json", ".work"}),
    patterns=(r"\..*\.tmp", r"\..*\.partial"),
)
DISTILL_FOLDER = Layout(
    records=("distill.json",),
    names=frozenset({"distill.json", "work", "stats.json", "rejects.jsonl"}),
    patterns=(r"part-\d{5}\.parquet", r"\..*\.tmp"),
)


# -- inputs a resume must find unchanged ------------------------------------------------


def input_state(paths: Iterable[str | Path]) -> dict[str, list[int]]:
    """Size and modification time of every local input file under ``paths`` (a folder:
    its data files, as readers list them; URLs are not stat'ed; a folder with no data
    file, such as a stage that kept nothing, has none)."""
    from fineinstructions.errors import InputError
    from fineinstructions.io.readers import input_files

    state: dict[str, list[int]] = {}
    for raw in paths:
        if is_url(raw) or not Path(raw).exists():
            continue
        try:
            files = input_files([raw])
        except InputError:  # an empty folder
            continue
        for file in files:
            stat = Path(file).stat()
            state[str(Path(file).resolve())] = [stat.st_size, stat.st_mtime_ns]
    return state


def changed_inputs(recorded: dict[str, list[int]]) -> list[str]:
    """How each recorded input file differs now (size, modification time), if it does."""
    from datetime import datetime

    def when(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")

    problems = []
    for path, (size, mtime) in recorded.items():
        try:
            stat = Path(path).stat()
        except FileNotFoundError:
            problems.append(f"{path} is gone")
            continue
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime):
            problems.append(f"{path} changed since the first run (size {size} → {stat.st_size} bytes, "
                            f"modified {when(mtime)} → {when(stat.st_mtime_ns)})")
    return problems


def refuse_changed_inputs(problems: list[str], folder: str | Path) -> None:
    """Refuse to resume ``folder`` over changed inputs (``problems``, from
    :func:`changed_inputs`): a resume reads the first run's byte ranges of each file and
    keeps what was made from the old rows."""
    if problems:
        raise UserError(
            f"{folder} holds work made from inputs that have changed since:\n  " + "\n  ".join(problems[:5])
            + (f"\n  … and {len(problems) - 5} more" if len(problems) > 5 else "")
            + "\n  A resume would read the first run's parts of each file and keep what was made from the old rows.\n"
            "  fix: restore the inputs as they were (the same bytes and modification time) to resume, or pass "
            "--overwrite to start again from the new ones"
        )


# -- one process per output folder -----------------------------------------------------

LOCK_NAME = ".fineinstructions.lock"


@contextmanager
def folder_lock(folder: str | Path, command: str = "") -> Iterator[None]:
    """Hold ``folder`` for this process: a second process that asks for it while this one
    lives gets a :class:`UserError` naming the holder. The lock is the kernel's
    (``flock``), so it ends with the process however it ends, ``kill -9`` included; the
    file it locks stays, harmless. On a network filesystem ``flock`` holds between
    processes of one machine, and between machines only where the filesystem forwards
    locks (NFSv4 does; some FUSE mounts do not): give each cluster job its own folder.
    """
    import fcntl
    import os
    import socket
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"{folder} is in use by {holder}; two runs writing one folder would collide.\n"
                "  fix: wait for that run to end (or stop it), then run again; or choose another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        who = f"fineinstructions {command}".strip()
        handle.write(f"{who} (pid {os.getpid()} on {socket.gethostname()}, since {started})")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
