"""The local engine: tasks one after another in this process, with one ``Worker`` for the
engine's life (the stages load once per run); the baseline for tests and benchmarks."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm

from core.config import LOCAL_ITEMS_PER_TASK
from core.errors import UsageError
from pipelines.staging import TaskMarker
from pipelines.worker import Worker
from schemas.store import DeltaStore

logger = logging.getLogger(__name__)


class LocalEngine:
    name = "local"

    def __init__(self, engine_args: list[str], progress: str = "auto"):
        if engine_args:
            raise UsageError(f"--engine-arg {engine_args}: the local engine takes no arguments")
        self.progress = progress == "on" or (progress == "auto" and sys.stderr.isatty())
        self.worker = Worker()

    def parallel_tasks(self) -> int:
        return 1

    def items_per_task(self, config: Any) -> int:
        return config.run.items_per_task or LOCAL_ITEMS_PER_TASK

    def run(self, func, job, tasks) -> None:
        with tqdm(total=len(tasks), unit="task", disable=not self.progress) as bar:
            for number, task in enumerate(tasks, start=1):
                marker = func(job, task, 0, self.worker)
                logger.info("task %d/%d done: %s", number, len(tasks), _counts(marker))
                bar.update(1)

    def commit_store(self, lake: str) -> DeltaStore:
        return DeltaStore(lake)

    def close(self) -> None:
        self.worker.close()


def _counts(marker: TaskMarker) -> str:
    """A task marker's counts (the Semantic-ID waves count only items)."""
    keys = ("items", "enriched", "failed", "skipped")
    return ", ".join(f"{getattr(marker, k)} {k}" for k in keys if getattr(marker, k) is not None)
