"""The Beam engine: the same stages as DoFns, FnApiRunner locally, any runner by options.

Manifest → Reshuffle → [BatchElements → CPU prep (media, ASR, OCR)] → [BatchElements →
describe (the GPU stage, fed by the CPU DoFn so it never decodes)] → [BatchElements → encode]
→ envelopes → Parquet staging shards. Failed items leave each stage on an ``errors`` tagged
output. The driver then commits the staging files to Delta with one MERGE step.
"""

from __future__ import annotations

import logging

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.commit import envelopes, staged_envelope
from pipelines.sids import code_items, group_sid_rows, load_codebook
from transforms.config import Config
from transforms.media import MEDIA_COLUMNS
from transforms.pipeline import build_stages
from transforms.semantic_ids.dedup import dedup_entry
from transforms.stage import Record, Stage, has_error

logger = logging.getLogger(__name__)
ERRORS = "errors"
ENVELOPE_SCHEMA = pa.schema(
    [("table", pa.string()), ("item_id", pa.string()), ("payload", pa.binary())]
)


class StagesDoFn(beam.DoFn):
    """Runs a group of stages on one batch; models load once per worker in ``setup``."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages  # pickled without models (Stage.__getstate__)

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def process(self, batch: list[Record]):
        for stage in self.stages:
            stage.process_batch(batch)
        for record in batch:
            if has_error(record):
                yield beam.pvalue.TaggedOutput(ERRORS, _light(record))
            else:
                yield record


class ToEnvelopes(beam.DoFn):
    def __init__(self, run_id: str):
        self.run_id = run_id

    def process(self, record: Record):
        yield from envelopes([_light(record)], self.run_id)


def _light(record: Record) -> Record:
    """The record without frames and audio: nothing downstream needs them."""
    return {k: v for k, v in record.items() if k not in MEDIA_COLUMNS}


def _batched(pcoll, stage: Stage, label: str):
    return pcoll | f"Batch{label}" >> beam.BatchElements(
        min_batch_size=1, max_batch_size=stage.batch_size
    )


def build_pipeline(
    pipeline: beam.Pipeline, config: Config, records: list[Record], staging: str, run_id: str
) -> None:
    media, asr, ocr, describe, encode = build_stages(config)
    items = pipeline | "Manifest" >> beam.Create(records) | "Spread" >> beam.Reshuffle()
    prepared = _batched(items, media, "Prep") | "CpuPrep" >> beam.ParDo(
        StagesDoFn([media, asr, ocr])
    ).with_outputs(ERRORS, main="ok")
    described = _batched(prepared.ok, describe, "Describe") | "Describe" >> beam.ParDo(
        StagesDoFn([describe])
    ).with_outputs(ERRORS, main="ok")
    encoded = _batched(described.ok, encode, "Encode") | "Encode" >> beam.ParDo(
        StagesDoFn([encode])
    ).with_outputs(ERRORS, main="ok")
    everything = (
        encoded.ok,
        prepared[ERRORS],
        described[ERRORS],
        encoded[ERRORS],
    ) | "Gather" >> beam.Flatten()
    (
        everything
        | "Envelopes" >> beam.ParDo(ToEnvelopes(run_id))
        | "Stage"
        >> beam.io.WriteToParquet(f"{staging}/part", ENVELOPE_SCHEMA, file_name_suffix=".parquet")
    )


def pipeline_options(engine_args: list[str]) -> PipelineOptions:
    """FnApiRunner unless the caller names a runner (DataflowRunner, FlinkRunner, ...)."""
    args = list(engine_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=FnApiRunner")
    return PipelineOptions(args)


def process_beam(
    config: Config, records: list[Record], staging: str, run_id: str, engine_args: list[str]
) -> None:
    """Run the Beam pipeline to completion, leaving Parquet envelopes under ``staging``."""
    options = pipeline_options(engine_args)
    logger.info(
        "beam: %d items, options %s", len(records), options.get_all_options(drop_default=True)
    )
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, config, records, staging, run_id)


# -- Semantic IDs: a distributed map with the pinned codebook, then a global group-by on codes --


class CodeItems(beam.DoFn):
    """Codes batches of embedded items; the codebook loads from the lake once per worker."""

    def __init__(self, lake: str, version: str):
        self.lake, self.version = lake, version

    def setup(self) -> None:
        self.codebook = load_codebook(self.lake, self.version)

    def process(self, batch: list[dict]):
        for item in code_items(self.codebook, batch):
            yield item["item_id"], item


class GroupSidRows(beam.DoFn):
    """One codes group → dedup suffixes → semantic_ids rows, as staging envelopes."""

    def __init__(self, lake: str, version: str, run_id: str, hash_buckets: int):
        self.lake, self.version = lake, version
        self.run_id, self.hash_buckets = run_id, hash_buckets

    def setup(self) -> None:
        self.codebook = load_codebook(self.lake, self.version)

    def process(self, keyed):
        _, group = keyed
        for row in group_sid_rows(self.codebook, list(group), self.run_id, self.hash_buckets):
            yield staged_envelope("semantic_ids", row)


def _to_dedup_group(joined):
    """item_id → (coded now?, held before?) → (codes key, (coded item or None, entry))."""
    item_id, sides = joined
    coded, held = list(sides["coded"]), list(sides["held"])
    item = coded[0] if coded else None
    key, entry = dedup_entry(item_id, item["codes"] if item else None, held[0] if held else None)
    yield key, (item, entry)


def assign_sids_beam(
    items: list[dict],
    held_files: list[str],
    lake: str,
    version: str,
    staging: str,
    run_id: str,
    hash_buckets: int,
    engine_args: list[str],
) -> None:
    """Stage ``semantic_ids`` envelopes for ``items`` (item_id, embedding, lineage) under
    ``staging``; ``held_files`` are the Parquet files of the current semantic_ids table."""
    with beam.Pipeline(options=pipeline_options(engine_args)) as pipeline:
        coded = (
            pipeline
            | "SidItems" >> beam.Create(items)
            | "BatchSid" >> beam.BatchElements(min_batch_size=1, max_batch_size=4096)
            | "Code" >> beam.ParDo(CodeItems(lake, version))
        )
        held = (
            pipeline
            | "HeldFiles" >> beam.Create(held_files)
            | "ReadHeld"
            >> beam.io.ReadAllFromParquet(columns=["item_id", "codes", "dedup", "codebook_version"])
            | "ThisVersion" >> beam.Filter(lambda row: row["codebook_version"] == version)
            | "KeyHeld" >> beam.Map(lambda row: (row["item_id"], (row["codes"], row["dedup"])))
        )
        (
            {"coded": coded, "held": held}
            | "JoinItem" >> beam.CoGroupByKey()
            | "ByCodes" >> beam.FlatMap(_to_dedup_group)
            | "GroupCodes" >> beam.GroupByKey()
            | "Dedup" >> beam.ParDo(GroupSidRows(lake, version, run_id, hash_buckets))
            | "StageSids"
            >> beam.io.WriteToParquet(
                f"{staging}/sids", ENVELOPE_SCHEMA, file_name_suffix=".parquet"
            )
        )


__all__ = ["process_beam", "build_pipeline", "StagesDoFn", "assign_sids_beam"]
