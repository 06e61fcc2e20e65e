"""The Beam engine: tasks as elements, FnApiRunner locally, any runner by options.

``Create(tasks) → Reshuffle → Map(run task)``: each element is one task (an input shard or
a bucket of codes); it reads its own input and writes its own staging through the storage
layer, so the pipeline carries only task descriptions, never items. Stages and models load
once per worker process (``pipelines.tasks.worker_stages``). ``--direct_num_workers=N
--direct_running_mode=multi_processing`` runs N worker processes; Dataflow and Flink options
pass through unchanged.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipelines.engines.base import TaskRunner, batched_items_per_task
from schemas.store import DeltaStore

logger = logging.getLogger(__name__)


def pipeline_options(engine_args: list[str]) -> PipelineOptions:
    """FnApiRunner unless the caller names a runner (DataflowRunner, FlinkRunner, ...)."""
    args = list(engine_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=FnApiRunner")
    return PipelineOptions(args)


class BeamEngine:
    name = "beam"
    commits_as_tasks_finish = False

    def __init__(self, engine_args: list[str]):
        self.options = pipeline_options(engine_args)

    def slots(self) -> int:
        return max(1, self.options.view_as(DirectOptions).direct_num_workers or 1)

    def items_per_task(self, config) -> int:
        return batched_items_per_task(config)

    def run(self, func, job, tasks, on_done=None) -> None:
        logger.info(
            "beam: %d tasks, options %s",
            len(tasks),
            self.options.get_all_options(drop_default=True),
        )
        with beam.Pipeline(options=self.options) as pipeline:
            (
                pipeline
                | "Tasks" >> beam.Create(tasks)
                | "Spread" >> beam.Reshuffle()
                | "Run" >> beam.Map(TaskRunner(func, job))
            )

    def commit_store(self, lake: str) -> DeltaStore:
        return DeltaStore(lake)
