"""Chaos testing (``run.faults``): make a stage hang, raise or kill its worker on chosen items.

``transforms.pipeline.stage_policy`` puts a ``FaultInjector`` in front of a stage's batches
(``transforms.runner.StageRunner``) only when ``run.faults`` names that stage; in every other
run no fault code is on the path.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any

from core.hashing import stable_hash
from transforms.stage import Record

logger = logging.getLogger(__name__)
CRASH_EXIT_CODE = 17


def fault_chosen(spec: Any, item_id: str) -> bool:
    """Whether ``run.faults`` picks this item to raise (a stable hash of seed and item_id)."""
    return int(stable_hash([spec.seed, item_id]), 16) / 16**16 < spec.fail_fraction


class FaultInjector:
    """Injects one stage's ``FaultSpec`` in front of its batch function. ``task_attempt`` is
    which try of its engine task this is: injected crashes happen on the first try only, so
    the engine's retry of the task succeeds, as after a lost executor."""

    def __init__(self, spec: Any, task_attempt: int = 0):
        self.spec, self.task_attempt = spec, task_attempt
        self.tries: Counter = Counter()  # item_id → tries of a chosen item so far

    def inject(self, records: list[Record]) -> None:
        """Hang, exit the process or raise on the configured items of ``records``."""
        spec = self.spec
        for record in records:
            item_id = str(record.get("item_id"))
            if item_id in spec.hang_items:
                time.sleep(spec.hang_s)
            if item_id in spec.crash_items and self.task_attempt == 0:
                logger.error("injected crash on %s: worker exits", item_id)
                os._exit(CRASH_EXIT_CODE)
            if fault_chosen(spec, item_id):
                self.tries[item_id] += 1
                if not spec.fail_attempts or self.tries[item_id] <= spec.fail_attempts:
                    raise RuntimeError(f"injected fault on {item_id}")
