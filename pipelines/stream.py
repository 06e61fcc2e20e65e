"""The streaming task runtime: items flow through the stages on bounded queues, so while the
describer works on item n, the media stage decodes item n+1 and the GPU (or a vLLM server)
never waits for the CPU.

    source ─► q ─► stage 1 (lanes) ─► q ─► stage 2 (lanes) ─► … ─► q ─► on_done (caller)

- Every stage runs in threads of its own (``lanes`` of them: a served describer keeps one
  request per lane in flight, so ``describe.concurrency`` requests are out all the time).
  Threads suit work that releases the GIL (onnxruntime, torch, CTranslate2, HTTP); a stage
  whose work holds it (the media stage) runs its lanes in worker processes (``ProcessStage``).
- A lane takes a batch as soon as ``batch_size`` items are waiting, or whatever has arrived
  ``max_wait_s`` after the first one: batches form as items arrive, and a slow trickle never
  stalls a half-full batch.
- Decoded media is held under a byte budget (``budget_bytes``, ``run.prefetch_mb``): once the
  items between the media stage and the last stage that reads media hold that much, the
  media stage waits. At most one media batch rides over the budget (its size is known only
  after decoding), and an item larger than the whole budget still passes, alone.
- An item that failed (``run`` returned it as failed) leaves the stream at once: it goes to
  ``on_done`` without visiting the later stages, its media released.
- A stage that raises (a stage's own failures come back marked on the item, so this is a
  bug or a bad setup such as a missing API key) stops the stream and is raised in the caller.

This module imports nothing but the standard library, so a bare machine (a GPU box without the
project's venv, see ``bench/gpu_throughput.py``) can run it. Stages are duck-typed: ``name``,
``batch_size``, optionally ``lanes`` (default 1), and ``run(list) -> (done, failed)``
(``transforms.runner.StageRunner``) or ``process_batch(list) -> list`` (nothing fails).
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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
    return max(1, int(getattr(stage, "batch_size", 1))), max(1, int(getattr(stage, "lanes", 1)))


def run_stage(stage: Any, batch: list[Any]) -> tuple[list[Any], list[Any]]:
    """(done, failed) of one batch: a runner's split, or all done for a plain stage."""
    if hasattr(stage, "run"):
        return stage.run(batch)
    return stage.process_batch(batch), []


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
        out, failed = run_stage(self.stages[k], batch)
        busy = time.perf_counter() - started
        with self._lock:
            stats = self.report.stages[self.stages[k].name]
            stats.batches, stats.items, stats.busy_s = (
                stats.batches + 1,
                stats.items + len(batch),
                stats.busy_s + busy,
            )
        for item in failed:  # the dead-letter path: straight to the caller
            self.free(item)
            if not self.put(len(self.stages), item):
                return
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
    """A stage whose batches run in worker processes (``ProcessLanes``): for work that holds
    the GIL (the media stage's Python-level frame work), which threads would serialize. It
    stands where the stage would (inside its ``StageRunner``), one lane per process, and
    copies the results back into the caller's items, keeping their identity."""

    def __init__(self, stage: Any, lanes: ProcessLanes):
        self.stage, self.name, self.batch_size = stage, stage.name, stage.batch_size
        self.lanes, self.pool = lanes.processes, lanes
        self.blob = pickle.dumps(stage)

    def setup(self) -> None:
        """Nothing here: each worker process sets the stage up on its first batch."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        done = self.pool.call(self.blob, batch)
        for mine, theirs in zip(batch, done, strict=True):
            mine.clear()
            mine.update(theirs)
        return batch


class ProcessLanes:
    """``processes`` spawned worker processes, owned by whoever made them (the engine's
    ``pipelines.worker.Worker``) and closed by it. Each keeps the stages it was sent, keyed by
    their pickle, for as long as it lives. A worker holds only its own end of its pipe, so
    when its owner dies, even by SIGKILL, its next read ends and it exits: nothing is left
    behind. A worker that died is replaced on the next call."""

    def __init__(self, processes: int):
        self.processes = processes
        self._idle: queue.Queue = queue.Queue()
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # forking under threads deadlocks

    def call(self, blob: bytes, batch: list[Any]) -> list[Any]:
        child = self._take()
        try:
            done = child.call(blob, batch)
        except ChildProcessError:
            with self._lock:
                self._children.remove(child)
            child.stop()
            raise
        self._idle.put(child)
        return done

    def _take(self) -> _Child:
        with self._lock:
            if len(self._children) < self.processes:
                child = _Child(self._context)
                self._children.append(child)
                return child
        while True:
            child = self._idle.get()
            if child.alive():
                return child
            with self._lock:
                self._children.remove(child)
                replacement = _Child(self._context)
                self._children.append(replacement)
            return replacement

    def close(self) -> None:
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            child.stop()


class _Child:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: Any):
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True)
        self.process.start()
        theirs.close()
        self.sent: set[bytes] = set()

    def alive(self) -> bool:
        return self.process.is_alive()

    def call(self, blob: bytes, batch: list[Any]) -> list[Any]:
        try:
            self.conn.send((blob if blob not in self.sent else None, hash(blob), batch))
            self.sent.add(blob)
            ok, result = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise ChildProcessError(
                f"a worker process died running a batch of {len(batch)} item(s)"
                f" (exit code {self.process.exitcode})"
            ) from exc
        if not ok:
            raise result
        return result

    def stop(self) -> None:
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def _serve(conn: Any) -> None:
    """A worker process: run each batch it is sent through the stage it names, until its
    parent's end of the pipe closes. A terminal's Ctrl-C reaches the whole process group:
    the worker ignores it, since its parent stops the run and closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stages: dict[int, Any] = {}
    while True:
        try:
            blob, key, batch = conn.recv()
        except (EOFError, OSError):
            return
        if blob is not None:
            stages[key] = pickle.loads(blob)
        try:
            conn.send((True, stages[key].process_batch(batch)))
        except Exception as exc:  # noqa: BLE001 - raised again in the parent
            conn.send((False, _picklable(exc)))


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception type the parent cannot rebuild
        return RuntimeError(f"{type(exc).__name__}: {exc}")


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
    "ProcessLanes",
    "ProcessStage",
    "StreamOptions",
    "StreamReport",
    "run_stream",
    "stream_shape",
]
