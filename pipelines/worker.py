"""What an engine keeps for the life of one worker, and hands to every task it runs there: the
parsed config, the stages with their loaded models, the media worker processes and the loaded
codebooks. The engine makes it and closes it: the local engine once per run, Beam in its
DoFn's ``setup`` (``teardown`` closes it), Spark once per executor Python process. Nothing
else in ``pipelines/`` or ``transforms/`` keeps state between tasks (a test holds that).

A task gets fresh ``StageRunner``s around the kept stages, so its counters start at zero.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from core.config import Config
from pipelines.codebooks import load_codebook
from pipelines.stream import ProcessLanes, ProcessStage
from transforms.pipeline import build_stages, stage_policy
from transforms.runner import StageRunner
from transforms.semantic_ids import Codebook
from transforms.stage import Stage

logger = logging.getLogger(__name__)
MAX_AUTO_PREP_PROCESSES = 4


class Worker:
    def __init__(self) -> None:
        self._configs: dict[str, Config] = {}
        self._stages: dict[str, list[Stage]] = {}
        self._codebooks: dict[tuple[str, str], Codebook] = {}
        self._lanes: ProcessLanes | None = None
        self._lock = threading.RLock()
        self.gpus: str | None = None  # Spark: the GPUs this worker's models are on (pin_gpus)

    def config(self, config_json: str) -> Config:
        """The job's config, parsed once."""
        with self._lock:
            if config_json not in self._configs:
                self._configs[config_json] = Config.model_validate_json(config_json)
            return self._configs[config_json]

    def stages(self, config_json: str) -> list[Stage]:
        """The stages of the job's config, built once (models load on first use)."""
        with self._lock:
            if config_json not in self._stages:
                _log_to_stderr()
                self._stages[config_json] = build_stages(self.config(config_json))
            return self._stages[config_json]

    def runners(self, config_json: str, attempt: int = 0) -> list[StageRunner]:
        """One task's runners: fresh counters and faults around this worker's stages; a stage
        whose work holds the GIL runs in the worker processes (``run.prep_processes``)."""
        config = self.config(config_json)
        processes = prep_processes(config)
        runners = []
        for stage in self.stages(config_json):
            policy = stage_policy(config, stage.name, attempt)
            # a stage with injected faults stays here: a crash must take the engine's worker
            if processes and stage.holds_gil and policy.faults is None:
                stage = ProcessStage(stage, self.process_lanes(processes))
            runners.append(StageRunner(stage, policy))
        return runners

    def process_lanes(self, processes: int) -> ProcessLanes:
        with self._lock:
            if self._lanes is not None and self._lanes.processes != processes:
                self._lanes.close()
                self._lanes = None
            if self._lanes is None:
                self._lanes = ProcessLanes(processes)
            return self._lanes

    def codebook(self, lake: str, version: str) -> Codebook:
        """A recorded codebook, loaded once (versions are immutable)."""
        with self._lock:
            if (lake, version) not in self._codebooks:
                self._codebooks[(lake, version)] = load_codebook(lake, version)
            return self._codebooks[(lake, version)]

    def close(self) -> None:
        """Stop the worker processes; the models go with this object."""
        with self._lock:
            if self._lanes is not None:
                self._lanes.close()
                self._lanes = None
            self._stages.clear()


def prep_processes(config: Config) -> int:
    """Worker processes for stages that hold the GIL (``run.prep_processes``)."""
    if config.run.prep_processes is not None:
        return config.run.prep_processes
    return min(os.cpu_count() or 1, MAX_AUTO_PREP_PROCESSES)


def _log_to_stderr() -> None:
    """Worker processes start with no logging set up; show the stages' progress lines."""
    stage_logger = logging.getLogger("transforms")
    if not stage_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        stage_logger.addHandler(handler)
        stage_logger.setLevel(logging.INFO)


__all__ = ["Worker", "prep_processes"]
