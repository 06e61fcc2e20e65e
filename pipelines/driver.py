"""One run, whatever the engine: plan, run the tasks, reconcile, commit, Semantic IDs, and the
``runs`` lineage row.

The driver plans and the workers work. The driver validates the input in one streaming pass
and cuts it into shards (names and row ranges, never the items), pins the codebook and the
``descriptions`` snapshot that incremental selection compares against, and hands the engine
small task descriptions. Tasks stage typed Parquet under ``<lake>/_staging/<run_id>/`` with a
completion marker each; the driver reconciles the markers with its plan and streams the
staged files into Delta MERGEs. It never holds the items, the rows or the embeddings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from pipelines.codebooks import pinned_codebook
from pipelines.commit import (
    RunSummary,
    SidStepFailed,
    commit_enriched,
    finished_markers,
    reconcile,
    record_run,
)
from pipelines.disk_reserve import release_space, reserve_space
from pipelines.engines import Engine, make_engine
from pipelines.incremental import pipeline_fingerprint
from pipelines.missing import handle_missing_inputs
from pipelines.refit_policy import check_refit_allowed
from pipelines.sids import first_codebook, uncoded_ids
from pipelines.tasks import (
    EnrichJob,
    SidTask,
    SidWaveJob,
    check_plan,
    code_task,
    dedup_task,
    enrich_task,
    staged_files,
    staging_folder,
)
from schemas.rows import utc_now
from schemas.store import (
    DeltaStore,
    LakeError,
    LakeWriteError,
    active_files,
    is_storage_error,
    lake_write_error,
)
from transforms import storage
from transforms.config import Config
from transforms.encode import encoder_id
from transforms.manifest import InputShard, ManifestError, plan_inputs
from transforms.pipeline import build_stages, stage_fingerprints
from transforms.semantic_ids import Codebook, TooFewEmbeddings

logger = logging.getLogger(__name__)
CODE_FILES_PER_TASK = 8


def run_pipeline(
    config: Config,
    inputs: str | list[str],
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
    whose finished tasks are committed, not redone."""
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    check_refit_allowed(
        DeltaStore(storage.normalize(lake)), config.semantic_ids, encoder_id(config.encode)
    )
    runner = make_engine(engine, engine_args, config.run.progress)
    store = runner.commit_store(storage.normalize(lake))
    summary = RunSummary(
        run_id=run_id,
        engine=runner.name,
        input=input_label,
        started_at=utc_now(),
        stage_fingerprints=stage_fingerprints(build_stages(config)),
    )
    shards = plan_inputs(inputs, runner.items_per_task(config), runner.slots())
    if not shards:
        raise ManifestError(f"--input {input_label} holds no media files or manifest rows")
    logger.info("run %s: %d items in %d tasks", run_id, sum(s.items for s in shards), len(shards))
    staging = staging_folder(store.lake, run_id, config.run.staging_uri)
    plan = {"inputs": inputs, "tasks": [[s.task_id, s.items] for s in shards], "force": force}
    plan["fingerprint"] = pipeline_fingerprint(summary.stage_fingerprints)
    with staging_writes(staging):
        check_plan(staging, plan, resume)
    record_run(store, config, summary)  # status "running": a run killed outright stays so
    reserve = reserve_space(store.lake, run_id)
    try:
        codebook = pinned_codebook(store, config.semantic_ids, encoder_id(config.encode))
        job = enrich_job(config, store, staging, run_id, summary, force, codebook, runner)
        with staging_writes(staging):
            markers = enrich(runner, store, job, shards, summary)
            handle_missing_inputs(store, shards, summary, config.run.on_missing_input)
            semantic_ids(runner, store, config, job, markers, summary)
        storage.delete_tree(staging)
        summary.check_error_rate(config.run.max_error_rate)
        summary.status = "succeeded"
    except BaseException as exc:
        summary.status = getattr(exc, "run_status", "failed")
        raise
    finally:
        summary.finished_at = utc_now()
        release_space(reserve)
        _record_final(store, config, summary)
    return summary


@contextmanager
def staging_writes(staging: str) -> Iterator[None]:
    """Storage failures while writing staging (a full disk, no permission) become the same
    clear ``LakeWriteError`` as a failed table write."""
    try:
        yield
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        raise lake_write_error("the run's staging", staging, exc) from exc


def enrich_job(config, store, staging, run_id, summary, force, codebook, runner) -> EnrichJob:
    return EnrichJob(
        config_json=config.model_dump_json(),
        lake=store.lake,
        staging=staging,
        run_id=run_id,
        fingerprint=pipeline_fingerprint(summary.stage_fingerprints),
        force=force,
        descriptions_version=store.version("descriptions"),
        codebook_version=codebook.version if codebook else None,
        sid_buckets=runner.slots(),
        chunk_items=max(config.media.batch_size, config.describe.batch_size) * 2,
        commit_items=config.run.commit_items,
        commit_interval_s=config.run.commit_interval_s,
        cache_dir=config.run.cache_dir,
    )


def enrich(
    runner: Engine, store: DeltaStore, job: EnrichJob, shards: list[InputShard], summary
) -> list[dict]:
    """Run the enrich tasks, reconcile their markers with the plan, commit their rows.
    Engines that report tasks as they end get them committed together once they hold
    ``commit_items`` items or ``commit_interval_s`` passed since the last commit."""
    planned = {s.task_id: s.items for s in shards}
    batch = CommitBatch(store, job, summary)

    def finished(marker: dict) -> None:
        task_id = marker["task_id"]
        reconcile(job.staging, "enrich", {task_id: planned[task_id]}, {task_id: marker})
        batch.add(marker)

    if done := len(storage.list_files(storage.join(job.staging, "_tasks", "enrich"))):
        summary.notes.append(f"resumed: {done} tasks an earlier attempt finished, not redone")
    runner.run(enrich_task, job, shards, finished if runner.commits_as_tasks_finish else None)
    markers = finished_markers(job.staging, "enrich", planned)
    batch.flush()
    pending = [m for k, m in markers.items() if k not in batch.committed]
    commit_enriched(store, pending, summary, job.commit_items)
    return list(markers.values())


class CommitBatch:
    """Finished tasks waiting for their commit: fewer, larger MERGEs, and a crash loses at most
    ``commit_interval_s`` of work (their staging stays for ``enrich run --resume``)."""

    def __init__(self, store: DeltaStore, job: EnrichJob, summary: RunSummary):
        self.store, self.job, self.summary = store, job, summary
        self.waiting: list[dict] = []
        self.committed: set[str] = set()
        self.since = time.monotonic()

    def add(self, marker: dict) -> None:
        self.waiting.append(marker)
        items = sum(m["items"] for m in self.waiting)
        overdue = time.monotonic() - self.since >= self.job.commit_interval_s
        if items >= self.job.commit_items or overdue:
            self.flush()

    def flush(self) -> None:
        if self.waiting:
            commit_enriched(self.store, self.waiting, self.summary, self.job.commit_items)
            self.committed.update(m["task_id"] for m in self.waiting)
            self.waiting = []
        self.since = time.monotonic()


def _record_final(store: DeltaStore, config: Config, summary: RunSummary) -> None:
    """The closing ``runs`` row; after a failed run, failing to write it must not hide why
    the run failed (the lake may be what failed)."""
    try:
        record_run(store, config, summary)
    except Exception:
        if summary.status == "succeeded":
            raise
        logger.exception("could not record failed run %s", summary.run_id)


def semantic_ids(
    runner: Engine,
    store: DeltaStore,
    config: Config,
    job: EnrichJob,
    markers: list[dict],
    summary: RunSummary,
) -> None:
    """Code this run's items (tasks coded them already when a codebook was pinned; after a
    first fit, a code wave does) and any embedded item an earlier run left uncoded, then
    run the dedup group-by on codes as one task per bucket, and commit ``semantic_ids``."""
    encoder = encoder_id(config.encode)
    codebook = pinned_codebook(store, config.semantic_ids, encoder)
    run_embeddings = staged_files(markers, "embeddings")
    if codebook is None and (run_embeddings or store.exists("embeddings")):
        codebook = fit_first_codebook(store, config, encoder, job.run_id, summary)
        if codebook is None:
            return
    if codebook is None:
        summary.notes.append("semantic_ids: nothing to code (no item reached the encoder)")
        return
    wave = SidWaveJob(
        lake=store.lake,
        staging=job.staging,
        run_id=job.run_id,
        codebook_version=codebook.version,
        encoder=encoder,
        buckets=max(1, runner.slots()),
        hash_buckets=config.semantic_ids.prefix_hash_buckets,
        held_version=store.version("semantic_ids"),
    )
    code_files = staged_files(markers, "sid_codes")
    coded_ids_in_run = job.codebook_version == codebook.version
    tasks = code_tasks(store, wave, [] if coded_ids_in_run else run_embeddings, summary)
    if tasks:
        runner.run(code_task, wave, tasks)
        done = finished_markers(job.staging, "code", {t.task_id: None for t in tasks})
        code_files += staged_files(list(done.values()), "sid_codes")
    if not code_files:
        reason = "every item was unchanged" if summary.skipped else "no item reached the encoder"
        summary.notes.append(f"semantic_ids: nothing new to code ({reason})")
        return
    dedup(runner, store, replace(wave, code_files=tuple(code_files)))
    summary.codebook_version = codebook.version
    summary.codebook_metrics = codebook.metrics


def fit_first_codebook(
    store: DeltaStore, config: Config, encoder: str, run_id: str, summary: RunSummary
) -> Codebook | None:
    """The lake's first codebook; None (and a note) when there are too few embeddings to fit
    one. Any other failure of the fit fails the SID step (``runs.status = sids_failed``)."""
    try:
        return first_codebook(store, config.semantic_ids, encoder, run_id)
    except TooFewEmbeddings as exc:
        summary.notes.append(f"semantic_ids skipped: {exc}")
        return None
    except (LakeError, LakeWriteError, OSError):
        raise  # storage, not the fit
    except Exception as exc:
        raise SidStepFailed(
            f"fitting the lake's first Semantic-ID codebook failed ({type(exc).__name__}: "
            f"{exc}). The enriched items are committed and the run is recorded as "
            "sids_failed; fix the cause and rerun (unchanged items are skipped, the fit is "
            "retried), or fit one with `enrich fit-sids --promote always --assign`"
        ) from exc


def code_tasks(
    store: DeltaStore, wave: SidWaveJob, run_embeddings: list[str], summary: RunSummary
) -> list[SidTask]:
    """Code tasks: this run's staged embeddings (when the codebook was fitted after its
    tasks ran), and the lake's embedded items an earlier run left without a SID."""
    tasks = [
        SidTask(f"run-{i:05d}", files=tuple(run_embeddings[i : i + CODE_FILES_PER_TASK]))
        for i in range(0, len(run_embeddings), CODE_FILES_PER_TASK)
    ]
    pending = uncoded_ids(store, wave.encoder, wave.codebook_version, run_id=wave.run_id)
    if pending:
        summary.notes.append(
            f"semantic_ids: also coded {len(pending)} embedded items that an earlier run "
            "left without a SID (it stopped before its SID step)"
        )
        lake_files = active_files(store.table("embeddings"))
        tasks.append(SidTask("pending", files=tuple(lake_files), only=tuple(pending)))
    return tasks


def dedup(runner: Engine, store: DeltaStore, wave: SidWaveJob) -> None:
    """The group-by on codes: one task per bucket, then one streamed MERGE."""
    tasks = [SidTask(f"{b:05d}", bucket=b) for b in range(wave.buckets)]
    runner.run(dedup_task, wave, tasks)
    markers = finished_markers(wave.staging, "dedup", {t.task_id: None for t in tasks})
    store.merge_files("semantic_ids", staged_files(list(markers.values()), "semantic_ids"))
