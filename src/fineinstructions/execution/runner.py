"""The one runner: every stage command runs its stage through :func:`run_stage`.

It owns, for every stage alike: the output folder and its fingerprint (a resume of
another job is refused), the shard plan (made once, kept in the folder), skipping
finished shards and cleaning unfinished ones, the request caches (one per worker, merged
into the stage's cache before and after), the executor, progress, the joined rejects
file and the summed counts. A stage whose folder holds ``stats.json`` is finished, and
running it again costs nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fineinstructions.execution.executor import Executor, LocalExecutor, ShardJob, worker_caches
from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.outputs import folder_lock, input_state, refuse_inputs_inside
from fineinstructions.execution.progress import Progress
from fineinstructions.execution.shards import InputShard, ReadSpec
from fineinstructions.io.formats import is_url
from fineinstructions.io.pieces import Piece
from fineinstructions.stages.base import Stage

Log = Callable[[str], None]


def beside(output: str | Path, suffix: str) -> Path:
    """``templates/`` + ``.rejects.jsonl`` → ``templates.rejects.jsonl`` next to it."""
    output = Path(output)
    return output.with_name(output.name.rstrip("/") + suffix)


def resolved(path: str | Path) -> str:
    """A path as recorded in fingerprints: absolute for a local path, as given for a URL."""
    return str(path) if is_url(path) else str(Path(path).resolve())


def document_read(config: Any) -> ReadSpec:
    """How workers read the corpus: the document field names and what a bad row does."""
    return ReadSpec(config.input.document_fields(), config.input.on_error)


def read_stats(run: "StageRun") -> dict:
    """What reading the corpus saw, as ``stats.json`` shows it."""
    counts = run.counts
    return {
        "rows": counts.get("read:rows", 0),
        "records": counts.get("read:records", 0),
        "skipped": {k[len("read:skipped:"):]: v for k, v in counts.items() if k.startswith("read:skipped:")},
    }


def stage_prompt(section: Any) -> Any:
    """The prompt a stage's section names, read here (a packaged name or a .toml file),
    so the stage and its workers read no file; ``None`` when the section names none or
    uses the released models' own format."""
    if getattr(section, "mode", "prompted") != "prompted" or not getattr(section, "prompt", None):
        return None
    from fineinstructions.text.prompting import load_prompt

    return load_prompt(section.prompt)


def merge_worker_caches(cache: str | Path | None, log: Log | None = None) -> None:
    """Fold the workers' request caches of a stage into its cache. Workers are closed
    before this runs; a file still held by a live process is left for the next run, and
    said so, never dropped."""
    if cache is None:
        return
    from fineinstructions.models.cache import merge_caches

    folder = worker_caches(cache)
    merge_caches(cache, folder)
    left = sorted(folder.glob("*.sqlite")) if folder.is_dir() else []
    if left and log is not None:
        log(
            f"warning: {len(left)} worker cache file(s) in {folder} are still held by a running process; "
            "their completions are kept there and merged by the next run"
        )


def shard_to_json(shard: InputShard) -> dict:
    return dataclasses.asdict(shard)


def shard_from_json(data: dict) -> InputShard:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if fields.get("piece") is not None:
        fields["piece"] = Piece(**fields["piece"])
    return InputShard(**fields)


@dataclass
class StageRun:
    """What :func:`run_stage` gives back: the summed counts of every shard, the markers,
    and the timing the throughput figures need."""

    counts: Counter = field(default_factory=Counter)
    markers: dict[int, dict] = field(default_factory=dict)
    wall_seconds: float = 0.0  # this run's wall time for the stage
    rejects_file: Path | None = None
    resumed: int = 0  # shards an earlier run had finished

    def rates(self, rows: str = "in", tokens: str | None = None, name: str = "rows") -> dict[str, Any]:
        """The job's throughput (over wall time) and the per-worker throughput (over the
        seconds workers spent in shards), kept apart: on a cluster they differ."""
        busy = self.counts.get("seconds", 0.0)
        count = self.counts.get(rows, 0)
        out: dict[str, Any] = {
            "seconds": round(busy, 2),
            "wall_seconds": round(self.wall_seconds, 2),
            f"{name}_per_s": round(count / self.wall_seconds, 3) if self.wall_seconds and not self.resumed else None,
            f"{name}_per_s_per_worker": round(count / busy, 3) if busy else None,
        }
        if tokens is not None:
            out["tokens_per_s"] = round(self.counts.get(tokens, 0) / self.wall_seconds, 1) if self.wall_seconds and not self.resumed else None
            out["tokens_per_s_per_worker"] = round(self.counts.get(tokens, 0) / busy, 1) if busy else None
        return out


def _paths(inputs: Any) -> list[str]:
    """The input files and folders named anywhere in a stage's ``inputs`` record."""
    if isinstance(inputs, dict):
        return [p for value in inputs.values() for p in _paths(value)]
    if isinstance(inputs, (list, tuple)):
        return [p for value in inputs for p in _paths(value)]
    if isinstance(inputs, (str, Path)) and not is_url(inputs) and Path(inputs).exists():
        return [str(inputs)]
    return []


def run_stage(
    stage: Stage,
    plan: Callable[[], Sequence[InputShard]],
    output: str | Path,
    *,
    inputs: dict[str, Any],
    read: ReadSpec | None = None,
    format: str = "parquet",
    cache: Path | None = None,
    record_ids: bool = False,
    overwrite: bool = False,
    executor: Executor | None = None,
    show_progress: bool = True,
    unit: str = "rows",
    progress_interval: float | None = None,
    log: Log = print,
) -> StageRun:
    """Run ``stage`` over the shards ``plan()`` makes (called on a first run only),
    writing into ``output``; resumes an unfinished run of the same job."""
    stage.check()
    paths = _paths(inputs)
    refuse_inputs_inside(output, paths)
    with folder_lock(output, stage.name):  # one process per output folder
        executor = executor or LocalExecutor()
        read = read or ReadSpec()
        folder = ShardFolder(output)
        fingerprint = {**stage.fingerprint(), "inputs": inputs, "format": format, "read": repr(read)}
        folder.prepare(fingerprint, overwrite=overwrite, input_files=input_state(paths))
        planned, _ = folder.plan(lambda: [shard_to_json(s) for s in plan()])
        folder.remember()
        shards = [shard_from_json(s) for s in planned]
        done = folder.finished()
        folder.remove_unfinished(done)
        run = StageRun(resumed=len(done))
        pending = [s for s in shards if s.index not in done]
        if done and pending:
            log(f"{stage.name}: resuming: {len(done)} of {len(shards)} shards were done")
        merge_worker_caches(cache, log)
        total = sum(s.rows or 0 for s in pending) if all(s.rows is not None for s in pending) else None
        progress = Progress(stage.name, total=total, unit=unit, enabled=show_progress and bool(pending), interval=progress_interval)
        tick = time.monotonic()

        batches = executor.reports_batches  # tokens counted as batches end, or per shard

        def shard_done(marker: dict) -> None:
            done[int(marker["shard"])] = marker
            counts = marker["counts"]
            progress.extra = f"{len(done)}/{len(shards)} shards"
            progress.update(counts.get("read:rows", counts.get("in", 0)), tokens=0 if batches else counts.get("completion_tokens", 0))

        def batch_done(counts: dict) -> None:  # in this process: tokens as they come
            progress.update(0, tokens=counts.get("completion_tokens", 0))

        job = ShardJob(str(folder.directory), format=format, read=read, cache=str(cache) if cache else None, record_ids=record_ids)
        try:
            executor.run(stage, pending, job, shard_done, batch_done if batches else None)
        finally:
            progress.close()
        run.wall_seconds = time.monotonic() - tick
        merge_worker_caches(cache, log)
        run.markers = dict(sorted(done.items()))
        for marker in run.markers.values():
            run.counts.update({k: v for k, v in marker["counts"].items() if isinstance(v, (int, float))})
        run.rejects_file = folder.join_rejects(beside(folder.directory, ".rejects.jsonl"))
        return run


