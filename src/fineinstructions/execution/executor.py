"""Executors: where the batches of a stage run, in this process or on a Ray cluster.

Each stage is written once, as a loop in the driver over *results*. It gives an executor
a source of rows and a :class:`Task` (a small, picklable description of the work: its
``start`` builds, once per process, the model or index a worker holds, and returns the
function from a batch of rows to a result), and gets the results back in input order.
What the driver does with them (write shards, commit ledger markers, count) is the same
whichever executor ran them, so both give the same rows in the same layout.

- :class:`LocalExecutor` reads the rows in this process and runs one worker here.
- :class:`RayExecutor` reads the rows with Ray Data (one read task per input file, local
  paths or any fsspec URL), runs the task as ``map_batches`` over a pool of actors sized
  by ``[ray.<stage>]`` (so a model or a FAISS index is loaded once per actor, not per
  batch), and streams the results back. A worker that dies is restarted and its batch
  retried by Ray; the driver receives each batch's result exactly once, so no output row
  is duplicated.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol, Sequence

from fineinstructions.config import LLMConfig, RayConfig
from fineinstructions.errors import InputError, MissingDependencyError, UserError
from fineinstructions.io.readers import (
    FieldMapping,
    ReadStats,
    document_builder,
    file_outcomes,
    input_files,
    query_builder,
    read_rows,
)
from fineinstructions.models.llm import LLM

READ_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class Files:
    """Rows read from files: ``documents``, ``queries`` (validated as the local readers do,
    bad rows raised or counted by ``on_error``), or ``rows`` this package wrote (``row_type``)."""

    paths: tuple[str, ...]
    kind: Literal["documents", "queries", "rows"]
    row_type: type | None = None
    fields: FieldMapping = FieldMapping()
    on_error: Literal["raise", "skip"] = "raise"

    def files(self) -> list[str]:
        return [str(p) for p in input_files(self.paths)]


@dataclass(frozen=True)
class Items:
    """Rows the driver already holds (such as the queries left after filtering)."""

    rows: Sequence[Any]


Source = Files | Items


@dataclass(frozen=True)
class Place:
    """Where a worker runs: ``worker_id`` names its own files (its request cache)."""

    worker_id: str
    distributed: bool

    def cache(self, main: Path | None) -> tuple[Path | None, Path | None]:
        """The request cache this worker writes, and the one it only reads.

        In this process: the stage's cache itself. On a cluster: a file of its own in
        ``STAGE.cache.d/``, reading the stage's cache (merged by the driver) beside it."""
        if main is None or not self.distributed:
            return main, None
        return worker_caches(main) / f"{self.worker_id}.sqlite", main


def resolved(path: str | Path) -> str:
    """A path as recorded in fingerprints: absolute for a local path, as given for a URL."""
    from fineinstructions.io.formats import is_url

    return str(path) if is_url(path) else str(Path(path).resolve())


def worker_caches(main: Path) -> Path:
    """The folder of the workers' own request caches beside a stage's cache."""
    return main.with_name(main.name.removesuffix(".sqlite") + ".d")


def merge_worker_caches(cache: Path | None) -> None:
    """Fold the workers' request caches of a stage into its cache (before the stage
    starts, for what the workers of a killed run had answered, and when it ends)."""
    if cache is not None:
        from fineinstructions.models.cache import merge_caches

        merge_caches(cache, worker_caches(cache))


def worker_llm(config: LLMConfig, cache: Path | None, place: Place, ready: LLM | None = None) -> tuple[LLM, bool]:
    """The LLM a worker uses, and whether the worker owns it (closes it when done):
    ``ready`` (a backend a test passes, used in this process only), or else the
    configured backend behind this worker's request cache (:meth:`Place.cache`)."""
    if ready is not None:
        return ready, False
    from fineinstructions.models.factory import make_llm

    path, shared = place.cache(cache)
    return make_llm(config, cache_path=path, shared_cache=shared), True


@dataclass
class LLMWorker:
    """A worker holding an LLM, which it closes when done if it made it."""

    llm: LLM
    owns_llm: bool

    def close(self) -> None:
        if self.owns_llm:
            self.llm.close()


class Task(Protocol):
    """A stage's work on one batch, described so that it can be shipped to a worker."""

    stage: str  # names its resources: [ray.<stage>]
    batch_size: int

    def start(self, place: Place) -> Callable[[list], Any]:
        """Load what the worker holds; return the function from a batch to its result.
        The function may have a ``close()``, called when the worker is done."""
        ...


def _close(function: Any) -> None:
    close = getattr(function, "close", None)
    if callable(close):
        close()


def read_source(source: Source, stats: ReadStats | None = None) -> Iterator[Any]:
    """The rows of a source, read in this process."""
    stats = stats if stats is not None else ReadStats()
    if isinstance(source, Items):
        yield from source.rows
        return
    for path in source.files():
        for records, read in _file_rows(source, path):
            read.add_to(stats, source.on_error)
            yield from records


@dataclass
class ReadCounts:
    """What reading a batch saw, carried back to the driver with the batch's result."""

    rows: int = 0
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors: list[InputError] = field(default_factory=list)

    def add_to(self, stats: ReadStats, on_error: str) -> None:
        stats.rows += self.rows
        stats.records += self.records
        stats.skipped.update(self.skipped)
        for error in self.errors:
            if on_error == "raise":
                raise error
            stats.record_error(error)


def _file_rows(source: Files, path: str, block_rows: int = READ_BLOCK_ROWS) -> Iterator[tuple[list, ReadCounts]]:
    """One file's records in blocks of ``block_rows`` records, each with what reading it saw."""
    if source.kind == "rows":
        rows: list = []
        for row in read_rows([path], source.row_type):  # type: ignore[arg-type]
            rows.append(row)
            if len(rows) == block_rows:
                yield rows, ReadCounts(rows=len(rows), records=len(rows))
                rows = []
        if rows:
            yield rows, ReadCounts(rows=len(rows), records=len(rows))
        return
    build = document_builder(source.fields) if source.kind == "documents" else query_builder(source.fields)
    records: list = []
    counts = ReadCounts()
    for outcomes in file_outcomes(path, build):
        counts.rows += 1
        for outcome in outcomes:
            if isinstance(outcome, InputError):
                if source.on_error == "raise":
                    raise outcome
                counts.errors.append(outcome)  # counted as invalid_row by ReadStats.record_error
            elif isinstance(outcome, str):
                counts.skipped[outcome] += 1
            else:
                counts.records += 1
                records.append(outcome)
        if len(records) >= block_rows:
            yield records, counts
            records, counts = [], ReadCounts()
    if counts.rows:
        yield records, counts


class LocalExecutor:
    """Everything in this process, one batch after another."""

    kind = "local"

    def rows(self, source: Source, stats: ReadStats | None = None) -> Iterator[Any]:
        return read_source(source, stats)

    def map(self, source: Source, task: Task, stats: ReadStats | None = None) -> Iterator[Any]:
        """The task's result for each batch of ``source``, in order (``None`` results,
        batches with nothing to do, are left out)."""
        from fineinstructions.execution.templatize import batched

        function = task.start(Place(worker_id=f"local-{os.getpid()}", distributed=False))
        try:
            for batch in batched(read_source(source, stats), task.batch_size):
                result = function(batch)
                if result is not None:  # a batch with nothing to do
                    yield result
        finally:
            _close(function)

    def close(self) -> None:
        pass


# --- Ray -------------------------------------------------------------------------


def _encode(records: list, counts: ReadCounts):
    """A block of rows for Ray Data: one row per record (so ``batch_size`` counts
    records), the block's read counts carried on its last row (or on a row of their own
    when every row of the block was skipped)."""
    import pyarrow as pa

    dump = functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)
    column = [dump(r) for r in records] or [None]
    notes: list = [None] * len(column)
    notes[-1] = dump(counts)
    return pa.table({"record": pa.array(column, pa.large_binary()), "read": pa.array(notes, pa.large_binary())})


def _decode(table) -> tuple[list, ReadCounts]:
    records: list = []
    total = ReadCounts()
    for payload in table.column("record").to_pylist():
        if payload is not None:
            records.append(pickle.loads(payload))
    for payload in table.column("read").to_pylist():
        if payload is not None:
            counts = pickle.loads(payload)
            total.rows += counts.rows
            total.records += counts.records
            total.skipped.update(counts.skipped)
            total.errors.extend(counts.errors)
    return records, total


def _read_file_blocks(source: Files, path: str, block_rows: int) -> Iterator[Any]:
    for records, counts in _file_rows(source, path, block_rows):
        yield _encode(records, counts)


def _items_blocks(rows: Sequence[Any], block_rows: int) -> Iterator[Any]:
    for first in range(0, len(rows), block_rows):
        chunk = list(rows[first : first + block_rows])
        yield _encode(chunk, ReadCounts(rows=len(chunk), records=len(chunk)))


def _datasource(source: Source, block_rows: int, parallelism: int):
    """A Ray Data datasource: one read task per input file (a file is read in order by
    one reader, so rows keep their order, and their file and line in error messages),
    cut into blocks of ``block_rows`` records: a block is one batch for one worker."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class RowsDatasource(Datasource):
        def __init__(self) -> None:
            self.files = source.files() if isinstance(source, Files) else []

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism_: int, per_task_row_limit: int | None = None, data_context=None) -> list:
            if isinstance(source, Files):
                return [
                    ReadTask(
                        functools.partial(_read_file_blocks, source, path, block_rows),
                        BlockMetadata(num_rows=None, size_bytes=None, input_files=[path], exec_stats=None),
                    )
                    for path in self.files
                ]
            rows = list(source.rows)
            blocks = -(-len(rows) // block_rows)
            per_task = max(1, -(-blocks // max(1, parallelism))) * block_rows
            return [
                ReadTask(
                    functools.partial(_items_blocks, rows[start : start + per_task], block_rows),
                    BlockMetadata(num_rows=len(rows[start : start + per_task]), size_bytes=None, input_files=None, exec_stats=None),
                )
                for start in range(0, len(rows), per_task)
            ]

    return RowsDatasource()


class _RayWorker:
    """One actor of a stage's pool: builds the task's worker once, then maps batches."""

    def __init__(self, task: Task) -> None:
        import ray

        # Models use the CPUs Ray reserved for this worker, not every core of the machine
        # (two workers on a 2-core machine would otherwise run 4 threads and thrash).
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        threads = str(max(1, round(cpus)))
        os.environ["FINEINSTRUCTIONS_THREADS"] = threads
        os.environ["OMP_NUM_THREADS"] = threads
        try:
            import torch

            torch.set_num_threads(int(threads))
        except ImportError:
            pass
        place = Place(worker_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}", distributed=True)
        self.function = task.start(place)

    def __call__(self, table):
        import pyarrow as pa

        records, counts = _decode(table)
        result = self.function(records) if records else None
        payload = pickle.dumps((result, counts), protocol=pickle.HIGHEST_PROTOCOL)
        return pa.table({"result": pa.array([payload], pa.large_binary())})

    def __del__(self) -> None:
        _close(getattr(self, "function", None))


def user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` a Ray failure carries (raised in a read task or a worker)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(current, UserError):
            if isinstance(cause, UserError):
                return cause
            return current if type(current).__module__.startswith("fineinstructions") else UserError(str(current))
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return None


class RayExecutor:
    """Ray Data: reads, ``map_batches`` over actor pools, results streamed to the driver."""

    kind = "ray"

    def __init__(self, config: RayConfig, *, address: str | None = None, show_progress: bool = False) -> None:
        try:
            import ray
            import ray.data  # noqa: F401
        except ImportError:
            raise MissingDependencyError("ray", "ray", "--executor ray") from None
        self.config = config
        self.started = False
        if not ray.is_initialized():
            address = address or config.address
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address:
                options["address"] = address
            elif config.num_cpus:
                options["num_cpus"] = config.num_cpus
            try:
                ray.init(**options)
            except ConnectionError as error:
                raise UserError(
                    f"cannot reach the Ray cluster at {address!r} ({error}).\n"
                    "  fix: start it (ray start --head) or pass its address with --ray-address"
                ) from None
            self.started = True
        from ray.data import DataContext

        if not show_progress:
            # This package's lines say what runs, and a failure is raised to the caller
            # with its own message: Ray Data's logging would say both again, at length.
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = DataContext.get_current()
        context.execution_options.preserve_order = config.preserve_order
        context.enable_progress_bars = show_progress
        self.context = context

    def _dataset(self, source: Source, block_rows: int = READ_BLOCK_ROWS, workers: int = 1):
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 1))
        datasource = _datasource(source, block_rows, cpus)
        # Ray Data sizes an actor pool by the blocks it expects, so ask for at least two
        # per worker; it splits the read blocks to get them, and the worker's batcher
        # joins the pieces back into whole batches of ``block_rows``.
        tasks = len(datasource.get_read_tasks(cpus))
        return ray.data.read_datasource(
            datasource, num_cpus=self.config.read_cpus, override_num_blocks=max(tasks, 2 * workers, 1)
        )

    def rows(self, source: Source, stats: ReadStats | None = None) -> Iterator[Any]:
        stats = stats if stats is not None else ReadStats()
        on_error = source.on_error if isinstance(source, Files) else "raise"
        try:
            for batch in self._dataset(source).iter_batches(batch_size=None, batch_format="pyarrow"):
                records, counts = _decode(batch)
                counts.add_to(stats, on_error)
                yield from records
        except Exception as error:
            raise user_error(error) or error from None

    def map(self, source: Source, task: Task, stats: ReadStats | None = None) -> Iterator[Any]:
        import ray

        stats = stats if stats is not None else ReadStats()
        on_error = source.on_error if isinstance(source, Files) else "raise"
        resources = getattr(self.config, task.stage)
        self._check_fits(task.stage, resources)
        batch_size = resources.batch_size or task.batch_size
        dataset = self._dataset(source, batch_size, resources.actors).map_batches(
            _RayWorker,
            fn_constructor_args=(task,),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=resources.actors),
            num_cpus=resources.cpus_per_actor,
            num_gpus=resources.gpus_per_actor or None,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                for payload in batch.column("result").to_pylist():
                    result, counts = pickle.loads(payload)
                    counts.add_to(stats, on_error)
                    if result is not None:
                        yield result
        except Exception as error:
            raise user_error(error) or error from None

    def _check_fits(self, stage: str, resources) -> None:
        """A pool that takes every CPU (or more GPUs than there are) would wait forever."""
        import ray

        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        need_cpus = resources.actors * resources.cpus_per_actor + self.config.read_cpus
        need_gpus = resources.actors * resources.gpus_per_actor
        if need_cpus > cpus + 1e-9 or need_gpus > gpus + 1e-9:
            raise UserError(
                f"ray.{stage}: {resources.actors} worker(s) x {resources.cpus_per_actor} CPU and "
                f"{resources.gpus_per_actor} GPU, plus {self.config.read_cpus} CPU to read, do not fit the "
                f"cluster ({cpus:g} CPUs, {gpus:g} GPUs).\n"
                f"  fix: lower ray.{stage}.actors or ray.{stage}.cpus_per_actor (for example "
                f"--set ray.{stage}.cpus_per_actor={_fitting(cpus - self.config.read_cpus, resources.actors)}), "
                "or add machines"
            )

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def _fitting(cpus: float, actors: int) -> float:
    """The CPUs per worker that fit, rounded down to a hundredth (at least 0.01)."""
    return max(0.01, int(cpus / max(actors, 1) * 100) / 100)


Executor = LocalExecutor | RayExecutor


def make_executor(
    kind: str, config: RayConfig | None = None, *, address: str | None = None, show_progress: bool = False
) -> Executor:
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(config or RayConfig(), address=address, show_progress=show_progress)
    raise UserError(f"unknown executor {kind!r}; choose 'local' or 'ray'")
