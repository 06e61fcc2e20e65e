"""The local engine: a plain in-process loop over the stages, committing in chunks.

It is the baseline for tests and benchmarks. A crash loses at most one chunk
(``run.commit_every`` items): every finished chunk is already MERGEd into the lake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from tqdm import tqdm

from pipelines.commit import RunSummary, commit_records, record_run
from pipelines.incremental import hash_inputs, pipeline_fingerprint, split_done
from pipelines.sids import LINEAGE, assign_semantic_ids, fit_codebook, pinned_codebook
from schemas.rows import utc_now
from schemas.store import DeltaStore
from transforms.config import Config
from transforms.media import MEDIA_COLUMNS
from transforms.pipeline import build_stages, stage_fingerprints
from transforms.stage import Record, Stage, has_error

logger = logging.getLogger(__name__)


def _chunks(items: list[Record], size: int) -> Iterator[list[Record]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _show_progress(setting: str) -> bool:
    return setting == "on" or (setting == "auto" and sys.stderr.isatty())


def run_stage(stage: Stage, records: list[Record], bar: tqdm | None = None) -> None:
    """Drive one stage over records in batches of ``stage.batch_size``."""
    for batch in _chunks(records, stage.batch_size):
        stage.process_batch(batch)
        if bar is not None:
            bar.update(len(batch))


def run_local(
    config: Config,
    records: list[Record],
    lake: str,
    run_id: str,
    input_label: str,
    force: bool = False,
) -> RunSummary:
    """Run every stage over the items that changed, commit per chunk, then assign SIDs."""
    store = DeltaStore(lake)
    stages = build_stages(config)
    summary = RunSummary(
        run_id=run_id,
        engine="local",
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
    progress = _show_progress(config.run.progress)
    bars = {
        s.name: tqdm(
            total=len(records),
            desc=f"{s.name:>8}",
            unit="clip",
            position=i,
            disable=not progress,
            leave=True,
        )
        for i, s in enumerate(stages)
    }
    encoded: list[Record] = []
    try:
        for chunk in _chunks(records, config.run.commit_every):
            for record in chunk:
                record["pipeline_fingerprint"] = fingerprint
            for stage in stages:
                run_stage(stage, chunk, bars[stage.name])
            commit_records(store, chunk, run_id)
            summary.count(chunk)
            encoded.extend(_sid_inputs(chunk))
        _semantic_ids(store, config, encoded, run_id, summary)
        summary.status = "succeeded"
    except BaseException:
        summary.status = "failed"
        raise
    finally:
        for bar in bars.values():
            bar.close()
        summary.stage_stats = {s.name: s.stats.as_dict() for s in stages}
        summary.finished_at = utc_now()
        record_run(store, config, summary)
    return summary


def _sid_inputs(chunk: list[Record]) -> list[Record]:
    """Keep only what SID assignment needs; drop frames and audio to free memory."""
    kept = []
    for record in chunk:
        for column in MEDIA_COLUMNS:
            record.pop(column, None)
        if not has_error(record):
            kept.append({k: record.get(k) for k in ("item_id", "embedding", *LINEAGE)})
    return kept


def _semantic_ids(
    store: DeltaStore, config: Config, items: list[Record], run_id: str, summary: RunSummary
) -> None:
    if not items:
        summary.notes.append("semantic_ids skipped: no item reached the encoder")
        return
    encoder = items[0]["encoder"]
    codebook = pinned_codebook(store, config.semantic_ids, encoder)
    if codebook is None:
        try:
            codebook = fit_codebook(store, config.semantic_ids, encoder, run_id)
        except ValueError as exc:
            summary.notes.append(f"semantic_ids skipped: {exc}")
            return
    rows = assign_semantic_ids(
        store, codebook, items, run_id, config.semantic_ids.prefix_hash_buckets
    )
    store.merge("semantic_ids", rows)
    summary.codebook_version = codebook.version
    summary.codebook_metrics = codebook.metrics
