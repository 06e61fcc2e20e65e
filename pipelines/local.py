"""The local engine: a plain in-process loop over the stages, committing in chunks.

It is the baseline for tests and benchmarks. A crash loses at most one chunk
(``run.commit_every`` items): every finished chunk is already MERGEd into the lake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from tqdm import tqdm

from pipelines.commit import RunSummary, commit_rows
from schemas.rows import table_rows
from schemas.store import DeltaStore
from transforms.config import Config
from transforms.media import MEDIA_COLUMNS
from transforms.stage import Record, Stage

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


def process_local(
    config: Config,
    stages: list[Stage],
    records: list[Record],
    store: DeltaStore,
    run_id: str,
    summary: RunSummary,
) -> list[Record]:
    """Drive the stages chunk by chunk, committing each chunk; returns the SID inputs."""
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
            for stage in stages:
                run_stage(stage, chunk, bars[stage.name])
            release_media(chunk)
            encoded.extend(commit_rows(store, table_rows(chunk, run_id), summary, len(chunk)))
    finally:
        for bar in bars.values():
            bar.close()
        summary.stage_stats = {s.name: s.stats.as_dict() for s in stages}
    return encoded


def release_media(chunk: list[Record]) -> None:
    """Drop frames and audio once a chunk is through the stages: nothing later needs them."""
    for record in chunk:
        for column in MEDIA_COLUMNS:
            record.pop(column, None)
