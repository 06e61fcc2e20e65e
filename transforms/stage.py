"""The Stage contract that every engine (local, Beam, Spark) drives.

A stage is cheap to build and to pickle; ``setup()`` loads heavy state once per worker;
``process_batch()`` takes records and returns them with the stage's columns added. A failing
item never raises: it comes back with ``record["error"] = {"stage", "code", "message"}`` and
the engine adapter routes it to the ``errors`` table. Records that already carry an error pass
through untouched, so one bad clip never blocks the rest of its batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from core.errors import EnrichError, checked_code
from core.hashing import stable_hash
from core.redact import redact_text

logger = logging.getLogger(__name__)

Record = dict[str, Any]
PROGRESS_LOG_S = 30.0
ERROR_KEY = "error"
# Timed work (``Stage._timed``): each worker thread sees its own cancel event; threads that ran
# over their limit stay listed until they end, so the CLI can wait for them before exiting.
_timed_work = threading.local()
_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()  # stages run in several threads (the streaming runtime)


def cancel_event() -> threading.Event | None:
    """Set once the timed work running in this thread was abandoned (None outside it): long
    loops, such as ``generate``, check it and stop early."""
    return getattr(_timed_work, "cancel", None)


def join_abandoned(timeout_s: float) -> int:
    """Wait up to ``timeout_s`` in all for abandoned timed work to end; how many still run."""
    deadline = time.monotonic() + timeout_s
    with _abandoned_lock:
        waiting = list(_abandoned)
    for thread in waiting:
        thread.join(max(0.0, deadline - time.monotonic()))
    with _abandoned_lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        return len(_abandoned)


# The streaming runtime runs a stage's batches in several threads (lanes): models load once
# and counters add up. Module locks, because a stage is pickled (a lock is not picklable).
_SETUP_LOCK = threading.RLock()
_STATS_LOCK = threading.Lock()


# ``ENRICH_CHECK_FIELDS=1`` (the test suite sets it): every batch is checked against the
# stage's contract, the fields it ``needs`` before and the fields it ``adds`` after.
CHECK_FIELDS = os.environ.get("ENRICH_CHECK_FIELDS") == "1"


class FieldContractError(EnrichError, AssertionError):
    """A stage read a field no earlier stage added, or did not add one it declares: a bug in
    the stage chain, not in the item, so it is raised instead of becoming an error row, and
    a run that meets it fails (exit 1). Still an ``AssertionError``: it is the debug-mode
    check of an invariant (``ENRICH_CHECK_FIELDS``)."""


def check_fields(stage: str, records: list[Record], fields: frozenset[str], when: str) -> None:
    """Raise ``FieldContractError`` naming each of ``fields`` a live record lacks."""
    for record in records:
        if has_error(record):
            continue  # a failed item stops where it failed
        if missing := sorted(fields - record.keys()):
            raise FieldContractError(
                f"{stage} {when}: record {record.get('item_id')!r} lacks {missing} "
                "(see Stage.needs / Stage.adds)"
            )


class StageError(EnrichError):
    """A per-item failure with a documented error code (see ``core.errors``): the stage
    catches it and the item becomes an error row, so it never ends a run by itself. Code
    outside a stage that lets one through (``enrich report`` reading a sample) fails like
    any data error: exit 1, run ``failed``."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = checked_code(code)
        self.message = message


@dataclass
class StageStats:
    """Counters a stage keeps about itself; the engine adapters report them."""

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


def stats_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What a stage did between two ``StageStats.as_dict()`` snapshots."""
    codes = {
        code: count - before["errors_by_code"].get(code, 0)
        for code, count in after["errors_by_code"].items()
        if count != before["errors_by_code"].get(code, 0)
    }
    return {
        "processed": after["processed"] - before["processed"],
        "failed": after["failed"] - before["failed"],
        "seconds": round(after["seconds"] - before["seconds"], 3),
        "errors_by_code": codes,
    }


def add_stats(
    total: dict[str, dict[str, Any]], part: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Sum per-stage stats from several workers (``{stage: StageStats.as_dict()}``)."""
    merged = {
        name: dict(stats, errors_by_code=dict(stats["errors_by_code"]))
        for name, stats in total.items()
    }
    for name, stats in part.items():
        into = merged.setdefault(
            name, {"processed": 0, "failed": 0, "seconds": 0.0, "errors_by_code": {}}
        )
        into["processed"] += stats["processed"]
        into["failed"] += stats["failed"]
        into["seconds"] = round(into["seconds"] + stats["seconds"], 3)
        for code, count in stats["errors_by_code"].items():
            into["errors_by_code"][code] = into["errors_by_code"].get(code, 0) + count
    return merged


def mark_error(record: Record, stage: str, code: str, message: str) -> Record:
    """Attach a per-item error to ``record`` (first error wins) and return it."""
    if not record.get(ERROR_KEY):
        record[ERROR_KEY] = {
            "stage": stage,
            "code": checked_code(code),
            "message": redact_text(message)[:2000],
        }
    return record


def has_error(record: Record) -> bool:
    return bool(record.get(ERROR_KEY))


def fault_chosen(spec: Any, item_id: str) -> bool:
    """Whether ``run.faults`` picks this item to raise (a stable hash of seed and item_id)."""
    return int(stable_hash([spec.seed, item_id]), 16) / 16**16 < spec.fail_fraction


@dataclass(frozen=True)
class StageRuntime:
    """How the engines run a stage, fixed when it is built (``transforms.pipeline``):
    ``retries`` of an item whose stage raised unexpectedly, ``timeout_s`` per item (None: no
    limit), and ``faults``, a ``transforms.faults.FaultInjector`` for chaos tests (None in
    every real run: then nothing but the stage runs on a batch)."""

    retries: int = 0
    timeout_s: float | None = None
    faults: Any = None

    def batch_function(self, run_batch: Callable[[list[Record]], None]) -> Callable:
        """``run_batch``, wrapped by the fault injector when one is configured."""
        return run_batch if self.faults is None else self.faults.wrap(run_batch)


class Stage:
    """Base class: load once (``setup``), then run on batches (``process_batch``)."""

    name: str = "stage"
    resources: str = "cpu"  # "cpu" or "gpu": a hint for the engine adapters
    # True: the work holds the GIL, so the streaming runtime runs it in worker processes
    # (run.prep_processes) rather than threads.
    holds_gil: bool = False
    # The record fields the stage reads, and those it adds to every record it does not mark
    # failed (a value may be None). A test walks the configured chains against these.
    needs: frozenset[str] = frozenset()
    adds: frozenset[str] = frozenset()

    def __init__(self, config: Any, batch_size: int = 8, runtime: StageRuntime | None = None):
        self.config = config
        self.batch_size = batch_size
        self.runtime = runtime or StageRuntime()
        self.stats = StageStats()
        self._ready = False
        self._logged_at = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Load models and heavy state once per worker process. Idempotent."""
        if self._ready:
            return
        with _SETUP_LOCK:
            if not self._ready:
                started = time.perf_counter()
                self.load()
                self._ready = True
                logger.info("%s ready in %.1fs", self.name, time.perf_counter() - started)

    def load(self) -> None:
        """Subclasses load their models here."""

    def fingerprint_fields(self) -> dict[str, Any]:
        """What changes this stage's output that its config section's settings do not say:
        model revisions, code versions, resolved or composed values. A key here replaces the
        setting of that name."""
        return {}

    def fingerprint(self) -> str:
        """The config section's fingerprinted settings (every one not tagged otherwise, see
        ``core.config.UNFINGERPRINTED``) with ``fingerprint_fields``."""
        settings = self.config.fingerprinted() if hasattr(self.config, "fingerprinted") else {}
        return stable_hash({"stage": self.name, **settings, **self.fingerprint_fields()})

    # -- processing --------------------------------------------------------------------------
    def process_batch(self, records: list[Record] | pa.RecordBatch) -> list[Record]:
        """Run the stage on one batch; failed items come back marked, never raised."""
        if isinstance(records, pa.RecordBatch):
            records = records.to_pylist()
        live = [r for r in records if not has_error(r)]
        started = time.perf_counter()
        if live:  # a batch of failed items passes through without loading the models
            if CHECK_FIELDS:
                check_fields(self.name, live, self.needs, "needs")
            self.setup()
            self._run_guarded(live)
            if CHECK_FIELDS:
                check_fields(self.name, live, self.adds, "adds")
        with _STATS_LOCK:
            self.stats.seconds += time.perf_counter() - started
            for record in live:
                if has_error(record):
                    self.stats.failed += 1
                    self.stats.errors_by_code[record[ERROR_KEY]["code"]] += 1
                else:
                    self.stats.processed += 1
        self._log_progress()
        return records

    def take_stats(self) -> StageStats:
        """This stage's counters, reset: a worker process hands them to the task's copy."""
        with _STATS_LOCK:
            stats, self.stats = self.stats, StageStats()
        return stats

    def add_stats(self, stats: StageStats) -> None:
        """Add counters taken from this stage's copy in a worker process."""
        with _STATS_LOCK:
            self.stats.processed += stats.processed
            self.stats.failed += stats.failed
            self.stats.seconds += stats.seconds
            self.stats.errors_by_code.update(stats.errors_by_code)

    def stream_shape(self) -> tuple[int, int]:
        """(batch size, lanes) for the streaming runtime (``pipelines.stream``): one lane of
        full batches, unless a stage keeps several batches in flight (a served model)."""
        return self.batch_size, 1

    def _log_progress(self) -> None:
        """Every ``PROGRESS_LOG_S`` seconds, log this worker's count and busy-time throughput
        (what Beam and Spark workers show in their logs; the CLI has progress bars too)."""
        if time.monotonic() - self._logged_at < PROGRESS_LOG_S:
            return
        self._logged_at = time.monotonic()
        done = self.stats.processed + self.stats.failed
        logger.info(
            "%s: %d items (%d failed), %.2f items/s",
            self.name,
            done,
            self.stats.failed,
            done / max(self.stats.seconds, 1e-9),
        )

    def _run_guarded(self, records: list[Record]) -> None:
        """Run the batch; if the batch as a whole fails (or times out), retry item by item."""
        run_batch = self.runtime.batch_function(self.run_batch)
        if len(records) == 1:
            self._guard_item(records[0], self._timed, run_batch, records)
            return
        try:
            self._timed(run_batch, records)
        except Exception as exc:  # noqa: BLE001 - isolate the bad item below
            logger.warning(
                "%s: batch of %d failed (%s), retrying per item", self.name, len(records), exc
            )
            for record in records:
                self._guard_item(record, self._timed, run_batch, [record])

    def _guard_item(self, record: Record, func: Any, *args: Any, **kwargs: Any) -> None:
        """Call ``func(*args, **kwargs)``; a documented ``StageError`` becomes an error on
        ``record`` at once, any other exception after ``runtime.retries`` retries."""
        retries = self.runtime.retries
        for attempt in range(retries + 1):
            try:
                func(*args, **kwargs)
                return
            except StageError as exc:
                mark_error(record, self.name, exc.code, exc.message)
                return
            except Exception as exc:  # noqa: BLE001 - one item's bug must not stop the run
                if attempt < retries:
                    logger.warning(
                        "%s: %s on %s, retry %d of %d",
                        self.name,
                        exc,
                        record.get("item_id"),
                        attempt + 1,
                        retries,
                    )
                    continue
                logger.exception("%s failed on %s", self.name, record.get("item_id"))
                message = f"{type(exc).__name__}: {exc} (after {attempt + 1} attempt(s))"
                mark_error(record, self.name, "internal_error", message)

    def _timed(self, func: Any, records: list[Record]) -> None:
        """``func(records)``, abandoned after ``runtime.timeout_s`` per item. A hung thread cannot
        be killed, so it works on copies of the records and never touches them after that; its
        cancel event is set, so work that checks ``cancel_event()`` stops soon."""
        if not self.runtime.timeout_s:
            func(records)
            return
        work = [dict(record) for record in records]
        outcome: dict[str, BaseException] = {}
        cancel = threading.Event()

        def call() -> None:
            _timed_work.cancel = cancel
            try:
                func(work)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = exc

        limit = self.runtime.timeout_s * len(records)
        worker = threading.Thread(target=call, name=f"{self.name}-timed", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            cancel.set()
            with _abandoned_lock:
                _abandoned[:] = [*(t for t in _abandoned if t.is_alive()), worker]
            raise StageError(
                "stage_timeout", f"{self.name} ran over {limit:.0f}s on {len(records)} item(s)"
            )
        if "error" in outcome:
            raise outcome["error"]
        for record, done in zip(records, work, strict=True):
            record.update(done)

    def run_batch(self, records: list[Record]) -> None:
        """Default: process items one by one; each item's failure is marked on it."""
        for record in records:
            self._guard_item(record, self.process_item, record)

    def process_item(self, record: Record) -> None:
        """Add this stage's columns to ``record`` in place, or raise ``StageError``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_item or run_batch")

    # -- pickling: never ship a loaded model -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_model")}
        state["_ready"] = False
        return state
