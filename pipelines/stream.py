"""The streaming task runtime: items flow through the stages on bounded queues, so while the
describer works on item n, the media stage decodes item n+1 and the GPU (or a vLLM server)
never waits for the CPU.

    source ─► q ─► stage 1 (lanes) ─► q ─► stage 2 (lanes) ─► … ─► q ─► on_done (caller)

- Every stage runs in threads of its own (``lanes`` of them: a served describer keeps one
  request per lane in flight, so ``describe.concurrency`` requests are out all the time).
  Threads suit work that releases the GIL (onnxruntime, torch, CTranslate2, HTTP); a stage
  whose work holds it (the media stage) runs its lanes in worker processes (``ProcessStage``).
- A lane takes a batch as soon as ``batch_size`` items are waiting, or whatever has arrived
  ``max_wait_s`` after the first one: batches span chunk boundaries, and a slow trickle never
  stalls a half-full batch.
- Decoded media is held under a byte budget (``budget_bytes``, ``run.prefetch_mb``): once the
  items between the media stage and the last stage that reads media hold that much, the
  media stage waits. At most one media batch rides over the budget (its size is known only
  after decoding), and an item larger than the whole budget still passes, alone.
- A stage that raises (a stage's own failures come back marked on the item, so this is a
  bug or a bad setup such as a missing API key) stops the stream and is raised in the caller.

This module imports nothing but the standard library, so a bare machine (a GPU box without the
project's venv, see ``bench/gpu_throughput.py``) can run it. Stages are duck-typed: ``name``,
``process_batch(list) -> list`` and either ``stream_shape() -> (batch_size, lanes)`` or
``batch_size``.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

POLL_S = 0.1  # how often a blocked thread looks for a stop
_END = object()  # end of stream, passed from lane to lane


@dataclass
class StreamOptions:
    """How a stream runs: the batching wait, the media budget and where media is released."""

    max_wait_s: float = 0.05
    budget_bytes: int = 0  # 0: no budget
    held_bytes: Callable[[Any], int] = lambda item: 0  # an item's decoded media, in bytes
    budget_from: int = 0  # the stage whose output is first counted (the media stage)
    release_after: int | None = None  # the last stage that reads media; None: the last stage
    release: Callable[[Any], None] = lambda item: None  # frees an item's media


@dataclass
class LaneStats:
    """What one stage did in a stream: batches, items, and the seconds its lanes were busy."""

    batches: int = 0
    items: int = 0
    busy_s: float = 0.0
    lanes: int = 1

    def as_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "items": self.items,
            "mean_batch": round(mean, 2),
            "busy_s": round(self.busy_s, 3),
            "lanes": self.lanes,
        }


@dataclass
class StreamReport:
    wall_s: float = 0.0
    items: int = 0
    peak_held_bytes: int = 0
    stages: dict[str, LaneStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "items": self.items,
            "peak_held_mb": round(self.peak_held_bytes / 2**20, 1),
            "stages": {name: s.as_dict() for name, s in self.stages.items()},
        }


def stream_shape(stage: Any) -> tuple[int, int]:
    """(batch size, lanes) a stage asks of the streaming runtime."""
    if hasattr(stage, "stream_shape"):
        return stage.stream_shape()
    return max(1, int(getattr(stage, "batch_size", 1))), 1


class ByteBudget:
    """Bytes of decoded media in flight; ``acquire`` waits while the budget is full."""

    def __init__(self, limit: int, stopped: threading.Event):
        self.limit, self.stopped = limit, stopped
        self.held = self.peak = 0
        self._changed = threading.Condition()

    def acquire(self, size: int) -> None:
        with self._changed:
            while self.limit and self.held and self.held + size > self.limit:
                if self.stopped.is_set():
                    return
                self._changed.wait(POLL_S)
            self.held += size
            self.peak = max(self.peak, self.held)

    def release(self, size: int) -> None:
        with self._changed:
            self.held -= size
            self._changed.notify_all()


class _Stream:
    """One run of ``run_stream``: the queues, the threads, the first failure."""

    def __init__(self, stages: Sequence[Any], options: StreamOptions):
        self.stages, self.options = list(stages), options
        self.stopped = threading.Event()
        self.failure: BaseException | None = None
        self.budget = ByteBudget(options.budget_bytes, self.stopped)
        self.held: dict[int, int] = {}  # id(item) → bytes counted against the budget
        self.shapes = [stream_shape(stage) for stage in self.stages]
        self.queues = [queue.Queue(maxsize=self._depth(k)) for k in range(len(self.stages) + 1)]
        lanes = {
            stage.name: shape[1] for stage, shape in zip(self.stages, self.shapes, strict=True)
        }
        self.report = StreamReport(stages={name: LaneStats(lanes=n) for name, n in lanes.items()})
        self.lanes_left = [lanes for _, lanes in self.shapes]
        self._lock = threading.Lock()
        last = len(self.stages) - 1
        self.release_after = last if options.release_after is None else options.release_after

    def _depth(self, k: int) -> int:
        """Queue k feeds stage k: room for two full rounds of its lanes' batches."""
        if k == len(self.stages):
            return 64
        size, lanes = self.shapes[k]
        return max(2, 2 * size * lanes)

    # -- blocking steps that give up when the stream stops -----------------------------------
    def put(self, k: int, item: Any) -> bool:
        while not self.stopped.is_set():
            try:
                self.queues[k].put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, k: int, timeout: float | None) -> Any:
        """The next item of queue k; None when ``timeout`` passed or the stream stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stopped.is_set():
            wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                return self.queues[k].get(timeout=wait)
            except queue.Empty:
                continue
        return None

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = exc
        self.stopped.set()

    # -- the threads -------------------------------------------------------------------------
    def feed(self, items: Iterable[Any]) -> None:
        try:
            for item in items:
                if not self.put(0, item):
                    return
            self.put(0, _END)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            self.fail(exc)

    def lane(self, k: int) -> None:
        try:
            while (batch := self.next_batch(k)) is not None:
                if batch:
                    self.run_batch(k, batch)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            self.fail(exc)

    def next_batch(self, k: int) -> list[Any] | None:
        """Up to a full batch from queue k: waits for the first item, then ``max_wait_s`` for
        the rest. None once the stream has ended for this lane (the end goes on)."""
        size = self.shapes[k][0]
        first = self.get(k, None)
        if first is None:
            return None
        if first is _END:
            self.end_lane(k)
            return None
        batch, deadline = [first], time.monotonic() + self.options.max_wait_s
        while len(batch) < size:
            item = self.get(k, max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            if item is _END:
                self.put(k, _END)  # for this stage's next lane, after this batch
                break
            batch.append(item)
        return batch

    def end_lane(self, k: int) -> None:
        """This lane saw the end: pass it to a sibling lane, or on when it was the last."""
        with self._lock:
            self.lanes_left[k] -= 1
            last = self.lanes_left[k] == 0
        self.put(k + 1 if last else k, _END)

    def run_batch(self, k: int, batch: list[Any]) -> None:
        started = time.perf_counter()
        out = self.stages[k].process_batch(batch)
        busy = time.perf_counter() - started
        with self._lock:
            stats = self.report.stages[self.stages[k].name]
            stats.batches, stats.items, stats.busy_s = (
                stats.batches + 1,
                stats.items + len(out),
                stats.busy_s + busy,
            )
        for item in out:
            if k == self.options.budget_from:
                size = self.options.held_bytes(item)
                self.budget.acquire(size)
                with self._lock:
                    self.held[id(item)] = size
            if k == self.release_after:
                self.free(item)
            if not self.put(k + 1, item):
                return

    def free(self, item: Any) -> None:
        self.options.release(item)
        with self._lock:
            size = self.held.pop(id(item), 0)
        self.budget.release(size)


class ProcessStage:
    """A stage whose batches run in worker processes: for work that holds the GIL (the media
    stage's Python-level frame work), which threads would serialize. Each lane hands its batch
    to a pool of ``processes`` spawned workers (one pool per process, reused by every task and
    config; a worker unpickles a stage once and keeps the last few), and copies the results
    back into the caller's items, keeping their identity. A stage with ``take_stats`` and
    ``add_stats`` gets its workers' counters back."""

    def __init__(self, stage: Any, processes: int):
        self.stage, self.name, self.processes = stage, stage.name, processes
        shipped = copy.copy(stage)
        if hasattr(shipped, "take_stats"):
            shipped.take_stats()  # the workers count from zero, not from this task's totals
        self.blob = pickle.dumps(shipped)

    def stream_shape(self) -> tuple[int, int]:
        return stream_shape(self.stage)[0], self.processes

    def process_batch(self, batch: list[Any]) -> list[Any]:
        pool = _process_pool(self.processes)
        try:
            done, stats = pool.submit(_run_in_worker, self.blob, batch).result()
        except BrokenProcessPool:
            _drop_pool(pool)  # a worker died: the next batch starts a fresh pool
            raise
        for mine, theirs in zip(batch, done, strict=True):
            mine.clear()
            mine.update(theirs)
        if stats is not None:
            self.stage.add_stats(stats)
        return batch


_POOL: list[tuple[int, ProcessPoolExecutor]] = []  # this process's pool, and its size
_POOL_LOCK = threading.Lock()
_WORKER_STAGES: dict[bytes, Any] = {}  # in a pool worker: stages by their pickle
WORKER_STAGES_KEPT = 4
PARENT_POLL_S = 0.5  # how soon a pool worker notices that its parent was killed


def _process_pool(processes: int) -> ProcessPoolExecutor:
    with _POOL_LOCK:
        if _POOL and _POOL[0][0] != processes:
            _POOL.pop()[1].shutdown(wait=False, cancel_futures=True)
        if not _POOL:
            context = multiprocessing.get_context("spawn")  # forking under threads deadlocks
            pool = ProcessPoolExecutor(
                processes,
                mp_context=context,
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
            _POOL.append((processes, pool))
        return _POOL[0][1]


def _exit_with_parent(parent: int) -> None:
    """In a pool worker: exit once the process that spawned it is gone. A worker waits on its
    task queue, whose write end it holds itself, so a parent killed by SIGKILL would otherwise
    leave it running (about 250 MB each) until killed by hand. A thread, not PDEATHSIG: that
    signal follows the thread that spawned the worker, which may end before the process."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    with _POOL_LOCK:
        if _POOL and _POOL[0][1] is pool:
            _POOL.pop()


def _run_in_worker(blob: bytes, batch: list[Any]) -> tuple[list[Any], Any]:
    """In a pool worker: run ``batch`` through the pickled stage (unpickled once, set up on
    first use), and hand back its counters."""
    if blob not in _WORKER_STAGES:
        while len(_WORKER_STAGES) >= WORKER_STAGES_KEPT:
            _WORKER_STAGES.pop(next(iter(_WORKER_STAGES)))
        _WORKER_STAGES[blob] = pickle.loads(blob)
    stage = _WORKER_STAGES[blob]
    done = stage.process_batch(batch)
    return done, stage.take_stats() if hasattr(stage, "take_stats") else None


def run_stream(
    items: Iterable[Any],
    stages: Sequence[Any],
    on_done: Callable[[Any], None],
    options: StreamOptions | None = None,
) -> StreamReport:
    """Run every item through ``stages`` on bounded queues; ``on_done(item)`` is called in
    this thread for each finished item, in the order they finish. Raises what a stage or the
    source raised, after stopping every thread."""
    stream = _Stream(stages, options or StreamOptions())
    started = time.perf_counter()
    threads = [threading.Thread(target=stream.feed, args=(items,), name="stream-source")]
    for k, stage in enumerate(stream.stages):
        threads += [
            threading.Thread(target=stream.lane, args=(k,), name=f"stream-{stage.name}-{lane}")
            for lane in range(stream.shapes[k][1])
        ]
    for thread in threads:
        thread.daemon = True
        thread.start()
    try:
        while (item := stream.get(len(stream.stages), None)) is not None and item is not _END:
            stream.report.items += 1
            on_done(item)
    except BaseException as exc:
        stream.fail(exc)
    finally:
        stream.stopped.set()
        for thread in threads:
            thread.join()
    if stream.failure is not None:
        raise stream.failure
    stream.report.wall_s = time.perf_counter() - started
    stream.report.peak_held_bytes = stream.budget.peak
    return stream.report


__all__ = [
    "ByteBudget",
    "ProcessStage",
    "StreamOptions",
    "StreamReport",
    "run_stream",
    "stream_shape",
]
