"""Streamed sampling: a synthetic table of any size as partitioned Parquet, in bounded memory.

``model.sample(n)`` builds one DataFrame; 10⁹ rows of a 20-column table would need ~160 GB. Here
the table is cut into partitions of a fixed, public number of rows (``part-00000.parquet``, …),
each written as row groups of ``row_group_rows`` rows, so a process holds one row group at a time
whatever ``n`` is. Partitions are drawn in parallel by worker processes (spawn; each loads the
model once and runs its numeric libraries on one thread).

With a SparkSession (``spark=``; the CLI's ``sample --engine spark``) the partitions are Spark
tasks instead: the model is broadcast to the executors once and each task writes its partitions
into the folder, which must therefore be on storage every executor can write (a shared filesystem;
any folder on a local master).

Deterministic per (seed, partition): row group ``g`` of partition ``p`` is drawn with the seed of
``SeedSequence(seed, spawn_key=(p, g))`` — never from which worker drew it or when — so the same
seed, ``partition_rows`` and ``row_group_rows`` give byte-identical files for any number of
processes.

The folder follows the output rules of :mod:`clinsynth.data.output_dir`: it is filled in a staging
folder and committed whole; each finished partition is recorded there, so after a kill or a failed
worker the output is untouched and ``resume`` draws only the partitions that are missing (the
others are already the bytes a fresh run would write). Only ordinary tables are streamed: a code
matrix or patients with visits are refused (their ids span partitions; write them as one file).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinsynth.errors import ClinsynthError, ConfigError, InputError

PARTITION_ROWS = 1_000_000
ROW_GROUP_ROWS = 250_000
PART_NAME = "part-{:05d}.parquet"
INFO_FILE = "_sampling.json"  # "_": pyarrow and pandas skip it when reading the folder as one table
_PROBE_ROWS = 2_000  # rows drawn once to learn the Parquet schema (and to tell this model's samples apart)


class SamplingInterrupted(ClinsynthError):
    """A worker was told to stop (another worker failed, or the run was interrupted)."""


# -- the plan: what each partition holds and how it is seeded ----------------------------------
@dataclass(frozen=True)
class Partition:
    """One output file: its index, its rows and the seeds of its row groups."""

    index: int
    rows: int
    seeds: tuple[int, ...]
    group_rows: int

    @property
    def name(self) -> str:
        return PART_NAME.format(self.index)

    def groups(self) -> Iterator[tuple[int, int]]:
        """(rows, seed) of each row group."""
        for g, seed in enumerate(self.seeds):
            yield min(self.group_rows, self.rows - g * self.group_rows), seed


def row_group_seed(seed: int, partition: int, group: int) -> int:
    """The seed of one row group: a function of (seed, partition, group) only (63 bits)."""
    import numpy as np

    state = np.random.SeedSequence(seed, spawn_key=(partition, group)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def plan(n: int, seed: int, partition_rows: int = PARTITION_ROWS, row_group_rows: int = ROW_GROUP_ROWS) -> list[Partition]:
    """The partitions of an ``n``-row sample: all full but the last."""
    out = []
    for p, start in enumerate(range(0, n, partition_rows)):
        rows = min(partition_rows, n - start)
        groups = -(-rows // row_group_rows)
        out.append(Partition(p, rows, tuple(row_group_seed(seed, p, g) for g in range(groups)), row_group_rows))
    return out


def _check_whole(value: Any, name: str, least: int) -> int:
    import numpy as np

    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{name} must be a whole number ≥ {least}, got {value!r}")
    return int(value)


# -- writing one partition (in a worker or in this process) ------------------------------------
def _arrow_schema(model: Any, conditions: Any) -> tuple[Any, str]:
    """The Parquet schema every partition is written with, and a fingerprint of the model's draws.

    Taken from a probe sample, so all files agree even when a column is all missing in one row group
    (pyarrow would type it ``null`` there); refuses models that do not sample an ordinary table."""
    import pandas as pd
    import pyarrow as pa

    from clinsynth.data.kinds import ONE, data_kind

    probe = model.sample(_PROBE_ROWS, conditions=conditions, seed=0)
    kind = data_kind(probe, getattr(model, "schema_", None))
    if kind != "table":
        raise InputError(f"model '{model.name}' samples {ONE[kind]}, whose patients would span partitions; "
                         "partitioned Parquet is written for ordinary tables only: sample it into one file "
                         "(--out synthetic.parquet) instead")
    schema = pa.Schema.from_pandas(probe, preserve_index=False)
    for i, f in enumerate(schema):
        if pa.types.is_null(f.type):  # all missing in the probe: the column's type from pandas
            kind = pa.float64() if pd.api.types.is_numeric_dtype(probe[f.name]) else pa.large_string()
            schema = schema.set(i, pa.field(f.name, kind))
    digest = hashlib.sha256(pd.util.hash_pandas_object(probe, index=False).to_numpy().tobytes())
    return schema, digest.hexdigest()


def write_partition(model: Any, part: Partition, directory: Path, schema: Any, conditions: Any = None,
                    check: Callable[[], None] | None = None) -> int:
    """Draw one partition row group by row group into ``directory/part-NNNNN.parquet`` (atomic);
    ``check`` is called between row groups and before the rename (it raises to stop)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clinsynth.data.io import atomic_path

    with atomic_path(directory / part.name) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for rows, seed in part.groups():
                if check is not None:
                    check()
                frame = model.sample(rows, conditions=conditions, seed=seed)
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                del frame
        if check is not None:
            check()
    return part.rows


_worker: dict[str, Any] = {}


def _start_worker(source: Any, parent: int, stop: Any, schema: Any, conditions: Any) -> None:
    """A worker's set-up: one thread per library, the model loaded once."""
    from clinsynth import threads

    threads.configure(1)
    if isinstance(source, (str, Path)):
        from clinsynth.models.registry import load

        source = load(source)
    _worker.update(model=source, parent=parent, stop=stop, schema=schema, conditions=conditions)


def _worker_check() -> None:
    """Stop when the parent asked, or died (an orphan must not write into a later run's folder)."""
    if _worker["stop"].is_set() or os.getppid() != _worker["parent"]:
        raise SamplingInterrupted("sampling was stopped")


def _worker_partition(part: Partition, directory: str) -> tuple[int, int]:
    rows = write_partition(_worker["model"], part, Path(directory), _worker["schema"], _worker["conditions"],
                           check=_worker_check)
    return part.index, rows


# -- the whole sample ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamResult:
    """What :func:`sample_to_parquet` wrote."""

    path: Path
    rows: int
    partitions: int
    processes: int
    seconds: float
    resumed: int = 0  # partitions kept from an interrupted run
    files: tuple[str, ...] = field(default=())

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C (as in the CLI), so the workers are stopped and the staging
    folder handled like any other failure (only from the main thread, where signals arrive)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sample_to_parquet(model: Any, n: int, output: str | Path, *, partition_rows: int = PARTITION_ROWS,
                      seed: int = 0, processes: int | None = None, conditions: dict[str, dict[str, float]] | None = None,
                      overwrite: bool = False, resume: bool = False, row_group_rows: int = ROW_GROUP_ROWS,
                      on_partition: Callable[[int, int], None] | None = None, spark: Any = None) -> StreamResult:
    """Draw ``n`` synthetic rows into the folder ``output`` as ``part-NNNNN.parquet`` files of
    ``partition_rows`` rows (the last may be shorter), in bounded memory, on ``processes`` worker
    processes (default: :func:`clinsynth.threads.count`).

    ``model`` is a fitted table model or a bundle folder (workers then load it themselves). The files
    depend on ``seed``, ``partition_rows`` and ``row_group_rows`` only, not on ``processes``.
    ``output`` must be new, empty or a previous partitioned sample (replaced only with
    ``overwrite``); it appears whole or not at all, and after an interruption ``resume=True`` draws
    only the missing partitions. ``on_partition(done, total)`` is called as partitions finish.
    ``spark``: a SparkSession whose executors draw the partitions (``processes`` is then unused;
    the files are the same bytes).

    >>> cs.sample_to_parquet("model/", 10**8, "synth/", seed=1)   # doctest: +SKIP
    """
    from clinsynth import threads
    from clinsynth.data.io import write_text_atomic
    from clinsynth.data.output_dir import check_target, staged_output

    n = _check_whole(n, "n", 1)
    partition_rows = _check_whole(partition_rows, "partition_rows", 1)
    row_group_rows = _check_whole(row_group_rows, "row_group_rows", 1)
    seed = _check_whole(seed, "seed", 0)
    processes = threads.count() if processes is None else _check_whole(processes, "processes", 1)
    check_target(output, "partitions", overwrite)  # before the model is loaded
    source = model
    if isinstance(model, (str, Path)):
        from clinsynth.models.registry import load

        model = load(model)
    schema, draws = _arrow_schema(model, conditions)
    parts = plan(n, seed, partition_rows, row_group_rows)
    from clinsynth.pipeline import run_fingerprint

    fingerprint = run_fingerprint("partitions", draws, n, partition_rows, row_group_rows, seed, conditions)
    started = time.perf_counter()
    with staged_output(output, "partitions", overwrite=overwrite, resume=resume) as stage:
        stage.claim(fingerprint)
        for leftover in stage.dir.glob(".part-*.tmp"):  # a killed writer's temporary file
            leftover.unlink()
        todo = [p for p in parts if stage.done(p.name) is None]
        resumed = len(parts) - len(todo)
        workers = max(1, min(processes if spark is None else spark.sparkContext.defaultParallelism, len(todo)))

        count = [resumed]

        def finished(index: int, rows: int) -> None:
            stage.mark(PART_NAME.format(index), rows=rows)
            count[0] += 1
            if on_partition is not None:
                on_partition(count[0], len(parts))

        with _sigterm_raises():
            if spark is not None and todo:
                _run_spark(spark, model, todo, stage.dir, schema, conditions, finished)
            elif workers == 1:
                for part in todo:
                    finished(part.index, write_partition(model, part, stage.dir, schema, conditions))
            else:
                _run_pool(source, model, todo, stage.dir, schema, conditions, workers, finished)
        info = {"rows": n, "partitions": len(parts), "partition_rows": partition_rows, "row_group_rows": row_group_rows,
                "seed": seed, "conditions": conditions, "model": model.name, "columns": schema.names,
                "files": [p.name for p in parts]}
        write_text_atomic(stage.dir / INFO_FILE, json.dumps(info, indent=1) + "\n")
        files = tuple(stage.files())
    return StreamResult(Path(output), n, len(parts), workers, time.perf_counter() - started, resumed, files)


def _run_pool(source: Any, model: Any, todo: list[Partition], directory: Path, schema: Any, conditions: Any,
              workers: int, finished: Callable[[int, int], None]) -> None:
    """Draw ``todo`` on ``workers`` spawned processes; on any failure stop them all (they check
    between row groups) and re-raise, so nothing half-done is recorded."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    payload = source if isinstance(source, (str, Path)) else model
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                               initargs=(str(payload) if isinstance(payload, Path) else payload, os.getpid(), stop,
                                         schema, conditions))
    try:
        pending = {pool.submit(_worker_partition, part, str(directory)) for part in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                finished(*future.result())  # a worker's exception is raised here
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _spark_task(shipped: Any, directory: str, schema: Any, conditions: Any) -> Callable[[Iterator[Partition]], Iterator[tuple[int, int]]]:
    """What one Spark task runs: its partitions, written with the broadcast model on one thread."""
    def run(parts: Iterator[Partition]) -> Iterator[tuple[int, int]]:
        from clinsynth import threads

        threads.configure(1)
        for part in parts:
            yield part.index, write_partition(shipped.value, part, Path(directory), schema, conditions)
    return run


def _run_spark(spark: Any, model: Any, todo: list[Partition], directory: Path, schema: Any, conditions: Any,
               finished: Callable[[int, int], None]) -> None:
    """Draw ``todo`` as Spark tasks, one partition each; on any failure or interruption the job is
    cancelled and the error re-raised, so nothing half-done is recorded (a task's file is written
    atomically; a cancelled task's temporary file is removed by ``resume``)."""
    context = spark.sparkContext
    shipped = context.broadcast(model)
    try:
        rdd = context.parallelize(todo, len(todo)).mapPartitions(_spark_task(shipped, str(directory), schema, conditions))
        for index, rows in rdd.collect():
            finished(index, rows)
    except BaseException:
        context.cancelAllJobs()
        raise
    finally:
        shipped.unpersist()
