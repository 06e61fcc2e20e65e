"""One run, whatever the engine: select changed items, process them, commit, Semantic IDs,
and the ``runs`` lineage row. Engines only differ in how the stages are driven."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from pipelines.commit import RunSummary, record_run
from pipelines.incremental import hash_inputs, pipeline_fingerprint, split_done
from pipelines.sids import SidJob, assign_semantic_ids, fit_codebook, pinned_codebook, uncoded_items
from schemas.rows import utc_now
from schemas.store import DeltaStore
from transforms.config import Config
from transforms.pipeline import build_stages, stage_fingerprints
from transforms.stage import Record

logger = logging.getLogger(__name__)
ENGINES = ("local", "beam", "spark")


def run_pipeline(
    config: Config,
    records: list[Record],
    lake: str,
    run_id: str,
    input_label: str,
    engine: str = "local",
    force: bool = False,
    engine_args: list[str] | None = None,
) -> RunSummary:
    """Enrich the items of ``records`` that changed and commit them to ``lake``."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    store = DeltaStore(lake)
    if engine == "spark":
        from pipelines.spark import commit_store

        store = commit_store(lake, engine_args or [])
    stages = build_stages(config)
    summary = RunSummary(
        run_id=run_id,
        engine=engine,
        input=input_label,
        started_at=utc_now(),
        stage_fingerprints=stage_fingerprints(stages),
    )
    fingerprint = pipeline_fingerprint(summary.stage_fingerprints)
    hash_inputs(records, config.media)
    records, done = split_done(store, records, fingerprint, force)
    summary.skipped = summary.items = len(done)
    if done:
        logger.info("incremental: %d items unchanged since their last run, skipped", len(done))
    for record in records:
        record["pipeline_fingerprint"] = fingerprint
    record_run(store, config, summary)  # status "running": a run killed outright stays so
    try:
        sid_inputs = _process(engine, config, stages, records, store, run_id, summary, engine_args)
        encoder = stages[-1].encoder_id
        semantic_ids(store, config, sid_inputs, run_id, summary, encoder, engine, engine_args)
        summary.status = "succeeded"
    except BaseException:
        summary.status = "failed"
        raise
    finally:
        summary.finished_at = utc_now()
        _record_final(store, config, summary)
    return summary


def _record_final(store: DeltaStore, config: Config, summary: RunSummary) -> None:
    """The closing ``runs`` row; after a failed run, failing to write it must not hide why
    the run failed (the lake may be what failed)."""
    try:
        record_run(store, config, summary)
    except Exception:
        if summary.status != "failed":
            raise
        logger.exception("could not record failed run %s", summary.run_id)


def _process(
    engine: str,
    config: Config,
    stages: list,
    records: list[Record],
    store: DeltaStore,
    run_id: str,
    summary: RunSummary,
    engine_args: list[str] | None,
) -> list[dict[str, Any]]:
    if engine == "local" or not records:
        from pipelines.local import process_local

        return process_local(config, stages, records, store, run_id, summary)
    from pipelines.commit import commit_staged

    with tempfile.TemporaryDirectory(prefix="enrich-staging-") as staging:
        if engine == "beam":
            from pipelines.beam import process_beam

            summary.stage_stats = process_beam(config, records, staging, run_id, engine_args or [])
        else:
            from pipelines.spark import process_spark

            process_spark(config, records, staging, run_id, engine_args or [])  # stats staged
        return commit_staged(store, staging, summary, config.run.commit_every)


def semantic_ids(
    store: DeltaStore,
    config: Config,
    items: list[dict[str, Any]],
    run_id: str,
    summary: RunSummary,
    encoder: str,
    engine: str = "local",
    engine_args: list[str] | None = None,
) -> None:
    """Pin (or fit, on a sample, on the driver) the codebook, then assign SIDs to this run's
    items and to any embedded item an earlier run left uncoded (it crashed before its SID
    step): in process, or on the engine as a distributed map plus a group-by on codes."""
    codebook = pinned_codebook(store, config.semantic_ids, encoder)
    if codebook is None and (items or store.exists("embeddings")):
        try:
            codebook = fit_codebook(store, config.semantic_ids, encoder, run_id)
        except ValueError as exc:
            summary.notes.append(f"semantic_ids skipped: {exc}")
            return
    pending = (
        uncoded_items(store, encoder, codebook.version, {i["item_id"] for i in items})
        if codebook
        else []
    )
    if not items and not pending:
        reason = "every item was unchanged" if summary.skipped else "no item reached the encoder"
        summary.notes.append(f"semantic_ids: nothing new to code ({reason})")
        return
    if pending:
        summary.notes.append(
            f"semantic_ids: also coded {len(pending)} embedded items that an earlier run "
            "left without a SID (it stopped before its SID step)"
        )
    items = [*items, *pending]
    buckets = config.semantic_ids.prefix_hash_buckets
    if engine == "local":
        rows = assign_semantic_ids(store, codebook, items, run_id, buckets)
    else:
        rows = _assign_on_engine(
            engine, store, codebook.version, items, run_id, buckets, engine_args
        )
    store.merge("semantic_ids", rows)
    summary.codebook_version = codebook.version
    summary.codebook_metrics = codebook.metrics


def _assign_on_engine(
    engine: str,
    store: DeltaStore,
    version: str,
    items: list[dict[str, Any]],
    run_id: str,
    hash_buckets: int,
    engine_args: list[str] | None,
) -> list[dict[str, Any]]:
    from pipelines.commit import read_staged

    if engine == "beam":
        from pipelines.beam import assign_sids_beam as assign
    else:
        from pipelines.spark import assign_sids_spark as assign
    held = store.table("semantic_ids").file_uris() if store.exists("semantic_ids") else []
    lake = store.lake if "://" in store.lake else str(Path(store.lake).resolve())
    with tempfile.TemporaryDirectory(prefix="enrich-sids-") as staging:
        assign(items, held, SidJob(lake, version, run_id, hash_buckets), staging, engine_args or [])
        return read_staged(staging, ("semantic_ids",))["semantic_ids"]
