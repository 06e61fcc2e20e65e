"""The one way Semantic IDs are assigned: the code wave (embeddings → ``sid_codes`` with a
pinned codebook) and the dedup wave (one task per bucket of codes → ``semantic_ids`` rows with
stable suffixes), then one streamed MERGE. A run drives them on its engine
(``run_sid_waves``); ``enrich assign-sids`` and ``enrich fit-sids --assign`` drive them on the
local engine over the lake's embeddings (``assign_sids``)."""

from __future__ import annotations

from dataclasses import replace

from pipelines.commit import RunSummary
from pipelines.context import RunContext
from pipelines.crosswalk import SID_COLUMNS, record_crosswalk
from pipelines.engines import Engine, make_engine
from pipelines.failures import SidStepFailed
from pipelines.sids import first_codebook, uncoded_ids
from pipelines.staging import Staging, TaskMarker, staged_files
from pipelines.tasks import EnrichJob, SidTask, SidWaveJob, code_task, dedup_task
from schemas.store import DeltaStore, LakeError, active_files, parquet_dataset
from transforms.semantic_ids import Codebook, TooFewEmbeddings

CODE_FILES_PER_TASK = 8


def code_wave(
    runner: Engine, staging: Staging, wave: SidWaveJob, tasks: list[SidTask]
) -> list[str]:
    """Run the code tasks; the ``sid_codes`` files they staged."""
    if not tasks:
        return []
    runner.run(code_task, wave, tasks)
    done = staging.finished("code", {t.task_id: None for t in tasks})
    return staged_files(done.values(), "sid_codes")


def dedup_wave(
    runner: Engine, staging: Staging, wave: SidWaveJob, code_files: list[str]
) -> list[str]:
    """The group-by on codes: one task per bucket; the ``semantic_ids`` files they staged."""
    wave = replace(wave, code_files=tuple(code_files))
    tasks = [SidTask(f"{b:05d}", bucket=b) for b in range(wave.buckets)]
    runner.run(dedup_task, wave, tasks)
    done = staging.finished("dedup", {t.task_id: None for t in tasks})
    return staged_files(done.values(), "semantic_ids")


def wave_job(
    store: DeltaStore,
    staging: Staging,
    run_id: str,
    codebook: Codebook,
    encoder: str,
    buckets: int,
    hash_buckets: int,
) -> SidWaveJob:
    """The SID waves' job: suffixes held at the lake's current ``semantic_ids`` version stay."""
    return SidWaveJob(
        lake=store.lake,
        staging=staging.uri,
        run_id=run_id,
        codebook_version=codebook.version,
        encoder=encoder,
        buckets=max(1, buckets),
        hash_buckets=hash_buckets,
        held_version=store.version("semantic_ids"),
    )


# -- a run's SID step ----------------------------------------------------------------------------
def run_sid_waves(
    runner: Engine,
    store: DeltaStore,
    context: RunContext,
    staging: Staging,
    job: EnrichJob,
    markers: list[TaskMarker],
    summary: RunSummary,
) -> None:
    """Code this run's items (with the pinned codebook, or the one fitted now) and any
    embedded item an earlier run left uncoded in the code wave, then run the dedup wave, and
    commit ``semantic_ids``."""
    codebook = context.sid_codebook()
    run_embeddings = staged_files(markers, "embeddings")
    if codebook is None and (run_embeddings or store.exists("embeddings")):
        codebook = fit_first_codebook(store, context, job.run_id, summary)
        if codebook is None:
            return
    if codebook is None:
        summary.notes.append("semantic_ids: nothing to code (no item reached the encoder)")
        return
    semantic_ids = context.config.semantic_ids
    wave = wave_job(
        store,
        staging,
        job.run_id,
        codebook,
        context.encoder,
        runner.parallel_tasks(),
        semantic_ids.prefix_hash_buckets,
    )
    tasks = code_tasks(store, wave, run_embeddings, summary)
    code_files = code_wave(runner, staging, wave, tasks)
    if not code_files:
        reason = "every item was unchanged" if summary.skipped else "no item reached the encoder"
        summary.notes.append(f"semantic_ids: nothing new to code ({reason})")
        return
    store.merge_files("semantic_ids", dedup_wave(runner, staging, wave, code_files))
    summary.codebook_version = codebook.version
    summary.codebook_metrics = codebook.metrics


def fit_first_codebook(
    store: DeltaStore, context: RunContext, run_id: str, summary: RunSummary
) -> Codebook | None:
    """The lake's first codebook; None (and a note) when there are too few embeddings to fit
    one. Any other failure of the fit fails the SID step (``runs.status = sids_failed``)."""
    try:
        return first_codebook(store, context.config.semantic_ids, context.encoder, run_id)
    except TooFewEmbeddings as exc:
        summary.notes.append(f"semantic_ids skipped: {exc}")
        return None
    except (LakeError, OSError):  # LakeWriteError is a LakeError
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
    """Code tasks: this run's staged embeddings, and the lake's embedded items an earlier run
    left without a SID."""
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


# -- the lake commands -------------------------------------------------------------------------
def assign_sids(
    store: DeltaStore,
    codebook: Codebook,
    encoder: str,
    run_id: str,
    *,
    only: list[str] | None = None,
    hash_buckets: int = 0,
    staging_uri: str | None = None,
) -> int:
    """SIDs from ``codebook`` for the lake's embedded items of ``encoder`` (``only``: those
    item ids), through the code and dedup waves on the local engine. Items that held a SID
    from another codebook get a ``sid_crosswalk`` row first. Returns the items coded."""
    if (only is not None and not only) or not store.exists("embeddings"):
        return 0
    runner = make_engine("local")
    staging = Staging.for_run(store.lake, run_id, staging_uri)
    wave = wave_job(
        store, staging, run_id, codebook, encoder, runner.parallel_tasks(), hash_buckets
    )
    lake_files = tuple(active_files(store.table("embeddings")))
    task = SidTask("lake", files=lake_files, only=None if only is None else tuple(only))
    try:
        with staging.writes():
            code_files = code_wave(runner, staging, wave, [task])
            sid_files = dedup_wave(runner, staging, wave, code_files) if code_files else []
    finally:
        runner.close()
    rows = parquet_dataset(sid_files).to_table(columns=SID_COLUMNS).to_pylist() if sid_files else []
    record_crosswalk(store, rows, run_id)
    store.merge_files("semantic_ids", sid_files)
    staging.delete()
    return len(rows)
