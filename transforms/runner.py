"""The run policy around any stage: retries, per-item timeouts, injected faults, counters and
the split into (done, failed). One ``StageRunner`` per stage per task: its counters start at
zero with the task, and the stage (with its loaded models) lives on in the engine's worker.

    done, failed = StageRunner(stage, StagePolicy(retries=1)).run(batch)

A batch that raises is retried item by item; an item that raises more than ``retries`` times
is marked ``internal_error``, and one that runs over its time ``stage_timeout``. Failed items
leave the stream at once (the dead-letter output): later stages never see them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from transforms.stage import ERROR_KEY, Record, Stage, StageError, has_error, mark_error

logger = logging.getLogger(__name__)
PROGRESS_LOG_S = 30.0
# Timed work runs in a thread of its own, named so; a thread that ran over its limit cannot be
# killed, so the CLI waits for such threads before the interpreter exits (``join_abandoned``).
TIMED_THREAD = "timed-stage-call"
# The cancel event of the timed work running in this thread (None outside timed work).
CANCEL: ContextVar[threading.Event | None] = ContextVar("stage_cancel", default=None)


def cancel_event() -> threading.Event | None:
    """Set once the timed work running in this thread was abandoned (None outside it): long
    loops, such as ``generate``, check it and stop early."""
    return CANCEL.get()


def join_abandoned(timeout_s: float) -> int:
    """Wait up to ``timeout_s`` in all for abandoned timed work to end; how many still run."""
    deadline = time.monotonic() + timeout_s
    for thread in timed_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    return len(timed_threads())


def timed_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == TIMED_THREAD and t.is_alive()]


@dataclass(frozen=True)
class StagePolicy:
    """How a stage runs in a task: ``retries`` of an item whose stage raised unexpectedly,
    ``timeout_s`` per item (None: no limit), and ``faults``, a
    ``transforms.faults.FaultInjector`` for chaos tests (None in every real run)."""

    retries: int = 0
    timeout_s: float | None = None
    faults: Any = None


@dataclass
class StageStats:
    """What one stage did in one task; the engines sum them across tasks."""

    processed: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors_by_code: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "errors_by_code": dict(self.errors_by_code),
        }


def add_stats(
    total: dict[str, dict[str, Any]], part: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Sum per-stage stats from several tasks (``{stage: StageStats.as_dict()}``)."""
    merged = {
        name: dict(stats, errors_by_code=dict(stats["errors_by_code"]))
        for name, stats in total.items()
    }
    for name, stats in part.items():
        into = merged.setdefault(name, StageStats().as_dict())
        into["processed"] += stats["processed"]
        into["failed"] += stats["failed"]
        into["seconds"] = round(into["seconds"] + stats["seconds"], 3)
        for code, count in stats["errors_by_code"].items():
            into["errors_by_code"][code] = into["errors_by_code"].get(code, 0) + count
    return merged


class StageRunner:
    """Runs one stage's batches for one task, from any number of threads (the stream's lanes).
    ``stage`` may be a proxy whose batches run elsewhere (``pipelines.stream.ProcessStage``)."""

    def __init__(self, stage: Stage, policy: StagePolicy | None = None):
        self.stage, self.policy = stage, policy or StagePolicy()
        self.name, self.batch_size, self.lanes = stage.name, stage.batch_size, stage.lanes
        self.stats = StageStats()
        self._lock = threading.Lock()
        self._logged_at = time.monotonic()

    def run(self, batch: list[Record]) -> tuple[list[Record], list[Record]]:
        """The batch's items that came through, and those that failed (here or before)."""
        live = [r for r in batch if not has_error(r)]
        started = time.perf_counter()
        if live:  # a batch of failed items passes without loading the models
            with self._lock:
                self.stage.setup()
            self._run_guarded(live)
        self._count(live, time.perf_counter() - started)
        return [r for r in batch if not has_error(r)], [r for r in batch if has_error(r)]

    def _count(self, records: list[Record], seconds: float) -> None:
        with self._lock:
            self.stats.seconds += seconds
            for record in records:
                if has_error(record):
                    self.stats.failed += 1
                    self.stats.errors_by_code[record[ERROR_KEY]["code"]] += 1
                else:
                    self.stats.processed += 1
            self._log_progress()

    def _log_progress(self) -> None:
        """Every ``PROGRESS_LOG_S`` seconds, this task's count and busy-time throughput (what
        Beam and Spark workers show in their logs; the CLI has progress bars too)."""
        if time.monotonic() - self._logged_at < PROGRESS_LOG_S:
            return
        self._logged_at = time.monotonic()
        done = self.stats.processed + self.stats.failed
        rate = done / max(self.stats.seconds, 1e-9)
        logger.info(
            "%s: %d items (%d failed), %.2f items/s", self.name, done, self.stats.failed, rate
        )

    def _call(self, records: list[Record]) -> None:
        """The stage on ``records``, behind the fault injector when one is configured."""
        if self.policy.faults is not None:
            self.policy.faults.inject(records)
        self.stage.process_batch(records)

    def _run_guarded(self, records: list[Record]) -> None:
        """The batch; if it raises (or times out) as a whole, each item alone."""
        if len(records) == 1:
            self._retried(records[0])
            return
        try:
            self._timed(records)
        except Exception as exc:  # noqa: BLE001 - isolate the bad item below
            logger.warning(
                "%s: batch of %d failed (%s), retrying per item", self.name, len(records), exc
            )
            for record in records:
                self._retried(record)

    def _retried(self, record: Record) -> None:
        """One item; a ``StageError`` marks it at once, any other exception after
        ``policy.retries`` retries."""
        retries = self.policy.retries
        for attempt in range(retries + 1):
            try:
                self._timed([record])
                return
            except StageError as exc:
                mark_error(record, self.name, exc.code, exc.message)
                return
            except Exception as exc:  # noqa: BLE001 - one item's bug must not stop the run
                item = record.get("item_id")
                if attempt < retries:
                    logger.warning(
                        "%s: %s on %s, retry %d of %d", self.name, exc, item, attempt + 1, retries
                    )
                    continue
                logger.exception("%s failed on %s", self.name, item)
                message = f"{type(exc).__name__}: {exc} (after {attempt + 1} attempt(s))"
                mark_error(record, self.name, "internal_error", message)

    def _timed(self, records: list[Record]) -> None:
        """The stage on ``records``, abandoned after ``policy.timeout_s`` per item. A hung
        thread cannot be killed, so it works on copies of the records and never touches them
        after that; its cancel event is set, so work that checks ``cancel_event()`` stops."""
        if not self.policy.timeout_s:
            self._call(records)
            return
        work = [dict(record) for record in records]
        outcome: dict[str, BaseException] = {}
        cancel = threading.Event()

        def call() -> None:
            CANCEL.set(cancel)
            try:
                self._call(work)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = exc

        limit = self.policy.timeout_s * len(records)
        worker = threading.Thread(target=call, name=TIMED_THREAD, daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            cancel.set()
            raise StageError(
                "stage_timeout", f"{self.name} ran over {limit:.0f}s on {len(records)} item(s)"
            )
        if "error" in outcome:
            raise outcome["error"]
        for record, done in zip(records, work, strict=True):
            record.update(done)
