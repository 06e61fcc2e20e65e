"""One run, whatever the engine, as a list of waves: plan the tasks, the enrich wave, inputs
that vanished, the Semantic-ID waves (a first fit, code, dedup), and the ``runs`` lineage row.
Every wave goes one way: run its tasks, reconcile their markers with the plan, then commit
in bounded MERGEs (``run.commit_items`` items each).

The driver plans and the workers work. The driver validates the input in one streaming pass
and cuts it into tasks (names and row ranges, never the items), pins the codebook and the
``descriptions`` snapshot that incremental selection compares against (``RunContext``), and
hands the engine small task descriptions. Tasks stage typed Parquet with a completion marker
each (``Staging``); the driver reconciles the markers with its plan and streams the staged
files into Delta MERGEs. It never holds the items, the rows or the embeddings.
"""

from __future__ import annotations

import logging

from core import storage
from core.config import Config
from core.errors import run_status_of
from core.signatures import positional_deprecated
from pipelines.commit import RunSummary, check_run_id, commit_enriched, record_run
from pipelines.context import RunContext
from pipelines.disk_reserve import release_space, reserve_space
from pipelines.engines import Engine, make_engine
from pipelines.interrupts import Stops, stop_on_signals
from pipelines.missing import handle_missing_inputs
from pipelines.refit_policy import check_refit_allowed
from pipelines.sid_waves import run_sid_waves
from pipelines.staging import Staging, TaskMarker
from pipelines.tasks import ENRICH_WAVE, EnrichJob, enrich_task
from schemas.rows import utc_now
from schemas.store import DeltaStore
from schemas.tables import RunStatus
from transforms.manifest import ManifestError, TaskInput, plan_inputs

logger = logging.getLogger(__name__)


@positional_deprecated
def run_pipeline(
    config: Config,
    inputs: str | list[str],
    *,
    lake: str,
    run_id: str,
    input_label: str,
    engine: str = "local",
    force: bool = False,
    engine_args: list[str] | None = None,
    resume: bool = False,
) -> RunSummary:
    """Enrich the items of ``inputs`` (a manifest, a media folder, or several manifests)
    that changed, and commit them to ``lake``. ``resume``: ``run_id`` is an interrupted run
    whose finished tasks are committed, not redone. SIGINT and SIGTERM stop it cleanly
    (``pipelines.interrupts``): the run ends ``interrupted``, resumable."""
    check_run_id(run_id)  # before any path is built from it
    with stop_on_signals() as stops:
        return _run_pipeline(
            config, inputs, lake, run_id, input_label, engine, force, engine_args, resume, stops
        )


def _run_pipeline(
    config: Config,
    inputs: str | list[str],
    lake: str,
    run_id: str,
    input_label: str,
    engine: str,
    force: bool,
    engine_args: list[str] | None,
    resume: bool,
    stops: Stops,
) -> RunSummary:
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    context = RunContext(config, DeltaStore(storage.normalize(lake)))
    context.store.require_intact()  # a damaged table stops the run before any write
    check_refit_allowed(context.store, config.semantic_ids, context.encoder)
    runner = make_engine(engine, engine_args, config.run.progress)
    store = runner.commit_store(context.store.lake)
    summary = RunSummary(
        run_id=run_id,
        engine=runner.name,
        input=input_label,
        started_at=utc_now(),
        stage_fingerprints=context.stage_fingerprints,
    )
    tasks = plan_tasks(inputs, input_label, runner, config)
    logger.info("run %s: %d items in %d tasks", run_id, sum(s.items for s in tasks), len(tasks))
    staging = Staging.for_run(store.lake, run_id, config.run.staging_uri)
    plan = {
        "inputs": inputs,
        "tasks": [[s.task_id, s.items] for s in tasks],
        "force": force,
        "fingerprint": context.fingerprint,
    }
    with staging.writes():
        staging.check_plan(plan, resume)
    stops.hold()  # a signal now is raised once the run is recorded, inside the try
    record_run(store, config, summary)  # status "running": a run killed outright stays so
    reserve = reserve_space(store.lake, run_id)
    try:
        stops.release()
        job = enrich_job(context, store, staging, run_id, force)
        with staging.writes():
            markers = enrich_wave(
                runner, store, staging, job, tasks, summary, config.run.commit_items
            )
            handle_missing_inputs(store, tasks, summary, config.run.on_missing_input)
            run_sid_waves(runner, store, context, staging, job, markers, summary)
        stops.hold()  # every wave is committed: the run ends as it ended, not interrupted
        staging.delete()
        summary.check_error_rate(config.run.max_error_rate)
        summary.status = RunStatus.SUCCEEDED
    except BaseException as exc:
        summary.status = RunStatus(run_status_of(exc))  # its class says which
        if isinstance(exc, KeyboardInterrupt):
            exc.run_id = run_id  # recorded, resumable: the CLI says how
        raise
    finally:
        stops.hold()  # closing: workers stop and the closing row is written, uninterrupted
        runner.close()
        summary.finished_at = utc_now()
        release_space(reserve)
        _record_final(store, config, summary)
    return summary


def plan_tasks(
    inputs: list[str], input_label: str, runner: Engine, config: Config
) -> list[TaskInput]:
    """The run's tasks: the input validated in one streaming pass and cut into tasks."""
    tasks = plan_inputs(inputs, runner.items_per_task(config), runner.parallel_tasks())
    if not tasks:
        raise ManifestError(f"--input {input_label} holds no media files or manifest rows")
    return tasks


def enrich_job(
    context: RunContext, store: DeltaStore, staging: Staging, run_id: str, force: bool
) -> EnrichJob:
    return EnrichJob(
        config_json=context.config.model_dump_json(),
        lake=store.lake,
        staging=staging.uri,
        run_id=run_id,
        fingerprint=context.fingerprint,
        force=force,
        descriptions_version=store.version("descriptions"),
        cache_dir=context.config.run.cache_dir,
    )


def enrich_wave(
    runner: Engine,
    store: DeltaStore,
    staging: Staging,
    job: EnrichJob,
    tasks: list[TaskInput],
    summary: RunSummary,
    commit_items: int,
) -> list[TaskMarker]:
    """Run the enrich tasks, reconcile every marker with the plan, then commit their rows.
    Nothing is committed unless the whole wave reconciles; a crash leaves the finished tasks
    staged, for ``enrich run --resume`` to commit without redoing them."""
    planned = {s.task_id: s.items for s in tasks}
    if done := staging.finished_count(ENRICH_WAVE):
        summary.notes.append(f"resumed: {done} tasks an earlier attempt finished, not redone")
    runner.run(enrich_task, job, tasks)
    markers = staging.finished(ENRICH_WAVE, planned)
    commit_enriched(store, list(markers.values()), summary, commit_items)
    return list(markers.values())


def _record_final(store: DeltaStore, config: Config, summary: RunSummary) -> None:
    """The closing ``runs`` row; after a failed run, failing to write it must not hide why
    the run failed (the lake may be what failed)."""
    try:
        record_run(store, config, summary)
    except Exception:
        if summary.status == RunStatus.SUCCEEDED:
            raise
        logger.exception("could not record failed run %s", summary.run_id)
