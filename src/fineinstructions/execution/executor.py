"""Executors: where a stage's shards run, in this process or on a Ray cluster.

Both run the same :func:`run_shard` on each worker: the worker reads its own input shard,
runs the stage over it batch by batch, and writes its own output shard and marker
(:mod:`.ledger`). The driver only plans shards and gathers each finished shard's marker
(a few hundred bytes), so its memory does not grow with the corpus.

- :class:`LocalExecutor`: one worker, in this process.
- :class:`RayExecutor`: a pool of Ray actors sized by ``[ray.<stage>]`` (actors, CPUs and
  GPUs each); each opens the stage once (its model or index) and is handed shards as it
  frees up. An actor that dies is restarted and its shard redone by Ray; since a shard is
  written under fixed names and committed by its marker, a redone shard neither loses
  nor duplicates a row. Shards finish in any order; the rows are the same.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from fineinstructions.config import RayConfig
from fineinstructions.errors import MissingDependencyError, ServerUnavailable, UserError
from fineinstructions.execution.ledger import ShardFolder
from fineinstructions.execution.shards import InputShard, ReadSpec, hashes_of, read_shard
from fineinstructions.models.llm import ErrorKind
from fineinstructions.stages.base import Stage, StageBatch, Worker

UNAVAILABLE = ErrorKind.UNAVAILABLE.value

OnShard = Callable[[dict], None]


@dataclass(frozen=True)
class ShardJob:
    """What every worker of a stage needs besides the stage: where output goes and how
    input is read. Small and picklable."""

    output: str
    format: str = "parquet"
    read: ReadSpec = ReadSpec()
    cache: str | None = None  # the stage's request cache (None: no cache)
    record_ids: bool = False  # keep the hashes of the document ids read (duplicate-id reduce)


def worker_caches(main: str | Path) -> Path:
    """The folder of the workers' own request caches beside a stage's cache."""
    main = Path(main)
    return main.with_name(main.name.removesuffix(".sqlite") + ".d")


def batched(items: Iterable[Any], size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def stop_if_unavailable(stage: Stage, shard: InputShard, part: StageBatch) -> None:
    """A server that stayed unreachable through every retry costs time, never rows: the
    shard is not committed (what the calls made so far returned is in the request cache),
    and the stage stops so that the next run, once the server is back, goes on."""
    failed = [r for r in part.rejects if r.reason == UNAVAILABLE]
    if failed:
        raise ServerUnavailable(
            f"{stage.name}: the LLM server is unreachable: {failed[0].detail}.\n"
            f"  Shard {shard.index} was not committed; every finished shard and every answer already "
            "received is kept.\n"
            "  fix: start the server (or check its address and network), then run the same command again: "
            "it makes only the calls that are missing"
        )


def run_shard(stage: Stage, shard: InputShard, job: ShardJob, worker_id: str, on_batch: OnShard | None = None) -> dict:
    """Read one input shard, run the stage over it, write the output shard; returns its marker."""
    tick = time.monotonic()
    items, read = read_shard(shard, job.read)
    result = StageBatch()
    for batch in batched(items, stage.batch_size):
        part = stage.process(batch)
        stop_if_unavailable(stage, shard, part)
        result.merge(part)
        if on_batch is not None:
            on_batch(dict(part.counts))
    result.counts.update(read.counts)
    result.counts["seconds"] = round(time.monotonic() - tick, 3)
    marker: dict[str, Any] = {"inputs": shard.describe(), "worker": worker_id, "counts": dict(result.counts)}
    if info := stage.info():
        marker["info"] = info
    folder = ShardFolder(job.output)
    if job.record_ids:
        import numpy as np

        folder.markers.mkdir(parents=True, exist_ok=True)
        np.save(folder.markers / f"{shard.index:05d}.ids.npy", hashes_of(read.ids))
    return folder.commit(shard.index, result.rows, stage.output, read.rejects + result.rejects, marker, format=job.format)


class LocalExecutor:
    """One worker, in this process, shard after shard."""

    kind = "local"
    reports_batches = True  # calls ``on_batch`` after each batch, in the driver's process

    def run(self, stage: Stage, shards: Sequence[InputShard], job: ShardJob, on_shard: OnShard, on_batch: OnShard | None = None) -> None:
        if not shards:
            return  # nothing to do: load no model
        worker_id = f"local-{os.getpid()}"
        stage.open(Worker(worker_id, cache=job.cache))
        try:
            for shard in shards:
                on_shard(run_shard(stage, shard, job, worker_id, on_batch))
        finally:
            stage.close()

    def close(self) -> None:
        pass


class _ShardWorker:
    """One Ray actor of a stage's pool: opens the stage once, then runs shards."""

    def __init__(self, stage: Stage, job: ShardJob) -> None:
        import ray

        # Models use the CPUs Ray reserved for this worker, not every core of the machine.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        threads = max(1, round(cpus))
        os.environ["FINEINSTRUCTIONS_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        cache = shared = None
        if job.cache is not None:
            folder = worker_caches(job.cache)
            folder.mkdir(parents=True, exist_ok=True)
            cache, shared = str(folder / f"{self.worker_id}.sqlite"), job.cache
        self.stage, self.job = stage, job
        stage.open(Worker(self.worker_id, cache=cache, shared_cache=shared, threads=threads))

    def run(self, shard: InputShard) -> dict:
        return run_shard(self.stage, shard, self.job, self.worker_id)

    def pid(self) -> int:
        return os.getpid()

    def peak_rss(self) -> int:
        """This worker's peak resident memory, in bytes (Linux reports KiB)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def close(self) -> None:
        self.stage.close()


def user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` a Ray failure carries (raised in a worker)."""
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
    """A pool of Ray actors per stage; shards are handed to whichever actor is free."""

    kind = "ray"
    reports_batches = False  # workers report whole shards only

    def __init__(self, config: RayConfig, *, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("ray", "ray", "--executor ray") from None
        self.config = config
        self.started = False
        self.actors: list = []  # the current stage's pool (tests reach its workers)
        self.worker_peak_rss: list[int] = []  # of the last stage's workers
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

    def run(self, stage: Stage, shards: Sequence[InputShard], job: ShardJob, on_shard: OnShard, on_batch: OnShard | None = None) -> None:
        import ray

        if not shards:
            return
        resources = getattr(self.config, stage.name)
        self._check_fits(stage.name, resources)
        actor_class = ray.remote(
            num_cpus=resources.cpus_per_actor,
            num_gpus=resources.gpus_per_actor or None,
            max_restarts=-1,
            max_task_retries=-1,
        )(_ShardWorker)
        size = min(resources.actors, len(shards))
        self.actors = [actor_class.remote(stage, job) for _ in range(size)]
        pending = list(reversed(shards))
        running: dict[Any, Any] = {}
        try:
            for actor in self.actors:
                if pending:
                    running[actor.run.remote(pending.pop())] = actor
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                actor = running.pop(done[0])
                on_shard(ray.get(done[0]))
                if pending:
                    running[actor.run.remote(pending.pop())] = actor
            # Close each worker (flushing its request cache) before the driver merges caches.
            self.worker_peak_rss = ray.get([actor.peak_rss.remote() for actor in self.actors])
            ray.get([actor.close.remote() for actor in self.actors])
        except Exception as error:
            raise user_error(error) or error from None
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []

    def _check_fits(self, stage: str, resources) -> None:
        """A pool that asks for more than the cluster has would wait forever."""
        import ray

        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        need_cpus = resources.actors * resources.cpus_per_actor
        need_gpus = resources.actors * resources.gpus_per_actor
        if need_cpus > cpus + 1e-9 or need_gpus > gpus + 1e-9:
            raise UserError(
                f"ray.{stage}: {resources.actors} worker(s) x {resources.cpus_per_actor} CPU and "
                f"{resources.gpus_per_actor} GPU do not fit the cluster ({cpus:g} CPUs, {gpus:g} GPUs).\n"
                f"  fix: lower ray.{stage}.actors or ray.{stage}.cpus_per_actor (for example "
                f"--set ray.{stage}.cpus_per_actor={_fitting(cpus, resources.actors)}), or add machines"
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


def make_executor(kind: str, config: RayConfig | None = None, *, address: str | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(config or RayConfig(), address=address)
    raise UserError(f"unknown executor {kind!r}; choose 'local' or 'ray'")
