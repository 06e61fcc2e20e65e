"""The Stage contract that every engine (local, Beam, Spark) drives.

A stage is cheap to build and to pickle; ``setup()`` loads heavy state once per worker;
``process_batch()`` takes items and returns them with the stage's fields added. Its facts are
declared on the class: ``name``, the fields it ``needs`` and ``adds``, the ``resources`` it
runs on, whether its work ``holds_gil``, and how many batches a served model keeps in flight
(``lanes``); ``batch_size`` comes from its config section.

A documented per-item failure is a ``StageError``: the stage marks that item
(``record["error"] = {"stage", "code", "message"}``) and goes on with the batch. Anything
else it raises; ``transforms.runner.StageRunner`` retries, times out, counts and splits the
batch into (done, failed), so a stage holds no run policy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from core.errors import EnrichError, checked_code
from core.hashing import stable_hash
from core.redact import redact_text

logger = logging.getLogger(__name__)

Record = dict[str, Any]
ERROR_KEY = "error"

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

    def __reduce__(self):  # crosses from a worker process intact
        return type(self), (self.code, self.message)


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


def isolate(record: Record, stage: str, func: Callable[..., Any], *args: Any, **kwargs: Any):
    """``func(*args, **kwargs)``, with a ``StageError`` marked on ``record`` instead of raised:
    one item's documented failure inside a batch leaves the others running."""
    try:
        func(*args, **kwargs)
    except StageError as exc:
        mark_error(record, stage, exc.code, exc.message)


class Stage:
    """Base class: load once (``setup``), then run on batches (``process_batch``)."""

    name: str = "stage"
    resources: str = "cpu"  # "cpu" or "gpu": where its model runs in the task
    holds_gil: bool = False  # True: the stream runs it in worker processes (run.prep_processes)
    lanes_setting: str | None = None  # its config key for batches in flight (a served model)
    # The fields the stage reads, and those it adds to every item it does not mark failed (a
    # value may be None). A test walks the configured chains against these.
    needs: frozenset[str] = frozenset()
    adds: frozenset[str] = frozenset()

    def __init__(self, config: Any, batch_size: int = 8):
        self.config, self.batch_size = config, batch_size
        self.ready = False

    def __reduce__(self):  # pickled as its config: a worker never receives a loaded model
        return type(self), (self.config,)

    @property
    def lanes(self) -> int:
        """Batches kept in flight at once: one, or the stage's ``lanes_setting``."""
        return getattr(self.config, self.lanes_setting) if self.lanes_setting else 1

    def setup(self) -> None:
        """Load models and heavy state once per worker process. Idempotent."""
        if not self.ready:
            started = time.perf_counter()
            self.load()
            self.ready = True
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

    def process_batch(self, records: list[Record] | pa.RecordBatch) -> list[Record]:
        """Run the stage on the batch's live items; items marked failed pass through."""
        if isinstance(records, pa.RecordBatch):
            records = records.to_pylist()
        live = [r for r in records if not has_error(r)]
        if live:  # a batch of failed items passes through without loading the models
            if CHECK_FIELDS:
                check_fields(self.name, live, self.needs, "needs")
            self.setup()
            self.run_batch(live)
            if CHECK_FIELDS:
                check_fields(self.name, live, self.adds, "adds")
        return records

    def run_batch(self, records: list[Record]) -> None:
        """Default: item by item, a ``StageError`` marked on its item (``isolate``)."""
        for record in records:
            isolate(record, self.name, self.process_item, record)

    def process_item(self, record: Record) -> None:
        """Add this stage's fields to ``record`` in place, or raise ``StageError``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_item or run_batch")
