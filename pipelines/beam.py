"""The Beam engine: the same stages, FnApiRunner locally, any runner by options.

Manifest → Reshuffle → [BatchElements → CPU prep DoFn (media, ASR, OCR)] → [RunInference:
describe, the GPU stage, fed by the CPU DoFn so it never decodes] → [RunInference: encode]
→ envelopes → Parquet staging shards. Failed items leave after each step on an ``errors``
tagged output. Every stage reports processed / failed / busy time / error codes as Beam
counters. The driver then commits the staging files to Delta with one MERGE step.
"""

from __future__ import annotations

import copy
import logging

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.commit import envelopes, staged_envelope
from pipelines.sids import SidJob, code_items, group_sid_rows
from transforms.config import Config
from transforms.media import MEDIA_COLUMNS
from transforms.pipeline import build_stages
from transforms.semantic_ids.dedup import dedup_entry
from transforms.stage import Record, Stage, has_error, stats_delta

logger = logging.getLogger(__name__)
ERRORS = "errors"
ERROR_PREFIX = "error."
ENVELOPE_SCHEMA = pa.schema(
    [("table", pa.string()), ("item_id", pa.string()), ("payload", pa.binary())]
)


def _process_counted(stage: Stage, batch: list[Record]) -> None:
    """Run one stage on a batch and add what it did to Beam counters (namespace = stage)."""
    before = stage.stats.as_dict()
    stage.process_batch(batch)
    delta = stats_delta(stage.stats.as_dict(), before)
    for key in ("processed", "failed"):
        Metrics.counter(stage.name, key).inc(delta[key])
    Metrics.counter(stage.name, "busy_ms").inc(round(delta["seconds"] * 1000))
    for code, count in delta["errors_by_code"].items():
        Metrics.counter(stage.name, f"{ERROR_PREFIX}{code}").inc(count)


class StagesDoFn(beam.DoFn):
    """Runs a group of CPU stages on one batch; they set up once per DoFn instance."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages  # pickled without models (Stage.__getstate__)

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def process(self, batch: list[Record]):
        for stage in self.stages:
            _process_counted(stage, batch)
        yield from batch


class StageModelHandler(ModelHandler):
    """RunInference adapter for a model stage (describe, encode): Beam loads the stage once
    per worker process and shares it across the DoFn threads, so a Dataflow worker with many
    threads holds one copy of the VLM, not one per thread."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.stage = stage

    def load_model(self) -> Stage:
        stage = copy.deepcopy(self.stage)  # a pickled-state copy: no model yet
        stage.setup()
        return stage

    def run_inference(self, batch, model: Stage, inference_args=None):
        records = list(batch)
        _process_counted(model, records)
        return records

    def get_num_bytes(self, batch) -> int:
        return sum(len(r.get("description") or "") + len(r.get("transcript") or "") for r in batch)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.stage.batch_size}

    def get_metrics_namespace(self) -> str:
        return f"RunInference_{self.stage.name}"


class SplitErrors(beam.DoFn):
    """Failed items leave on the ``errors`` output, without frames and audio."""

    def process(self, record: Record):
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


def _split(pcoll, label: str):
    return pcoll | f"Split{label}" >> beam.ParDo(SplitErrors()).with_outputs(ERRORS, main="ok")


def build_pipeline(
    pipeline: beam.Pipeline, config: Config, records: list[Record], staging: str, run_id: str
) -> None:
    media, asr, ocr, describe, encode = build_stages(config)
    items = pipeline | "Manifest" >> beam.Create(records) | "Spread" >> beam.Reshuffle()
    prepared = _split(
        items
        | "BatchPrep" >> beam.BatchElements(min_batch_size=1, max_batch_size=media.batch_size)
        | "CpuPrep" >> beam.ParDo(StagesDoFn([media, asr, ocr])),
        "Prep",
    )
    described = _split(
        prepared.ok | "Describe" >> RunInference(StageModelHandler(describe)), "Describe"
    )
    encoded = _split(
        described.ok
        | "DropMedia" >> beam.Map(_light)
        | "Encode" >> RunInference(StageModelHandler(encode)),
        "Encode",
    )
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


def stage_stats(result, stage_names: list[str]) -> dict[str, dict]:
    """The stages' counters from a finished pipeline, in ``StageStats.as_dict()`` form."""
    stats = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        name, key = counter.key.metric.namespace, counter.key.metric.name
        if name not in stage_names:
            continue
        entry = stats.setdefault(
            name, {"processed": 0, "failed": 0, "seconds": 0.0, "errors_by_code": {}}
        )
        value = counter.committed or counter.attempted or 0
        if key == "busy_ms":
            entry["seconds"] = round(value / 1000, 3)
        elif key.startswith(ERROR_PREFIX):
            entry["errors_by_code"][key.removeprefix(ERROR_PREFIX)] = value
        else:
            entry[key] = value
    return stats


def pipeline_options(engine_args: list[str]) -> PipelineOptions:
    """FnApiRunner unless the caller names a runner (DataflowRunner, FlinkRunner, ...)."""
    args = list(engine_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=FnApiRunner")
    return PipelineOptions(args)


def process_beam(
    config: Config, records: list[Record], staging: str, run_id: str, engine_args: list[str]
) -> dict[str, dict]:
    """Run the Beam pipeline to completion, leaving Parquet envelopes under ``staging``;
    returns the stages' stats from the pipeline's counters."""
    options = pipeline_options(engine_args)
    logger.info(
        "beam: %d items, options %s", len(records), options.get_all_options(drop_default=True)
    )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, records, staging, run_id)
    result = pipeline.run()
    result.wait_until_finish()
    return stage_stats(result, [stage.name for stage in build_stages(config)])


# -- Semantic IDs: a distributed map with the pinned codebook, then a global group-by on codes --


class CodeItems(beam.DoFn):
    """Codes batches of embedded items; the codebook loads from the lake once per worker."""

    def __init__(self, job: SidJob):
        self.job = job

    def setup(self) -> None:
        self.codebook = self.job.codebook()

    def process(self, batch: list[dict]):
        for item in code_items(self.codebook, batch):
            yield item["item_id"], item


class GroupSidRows(beam.DoFn):
    """One codes group → dedup suffixes → semantic_ids rows, as staging envelopes."""

    def __init__(self, job: SidJob):
        self.job = job

    def setup(self) -> None:
        self.codebook = self.job.codebook()

    def process(self, keyed):
        _, group = keyed
        job = self.job
        for row in group_sid_rows(self.codebook, list(group), job.run_id, job.hash_buckets):
            yield staged_envelope("semantic_ids", row)


def _to_dedup_group(joined):
    """item_id → (coded now?, held before?) → (codes key, (coded item or None, entry))."""
    item_id, sides = joined
    coded, held = list(sides["coded"]), list(sides["held"])
    item = coded[0] if coded else None
    key, entry = dedup_entry(item_id, item["codes"] if item else None, held[0] if held else None)
    yield key, (item, entry)


def assign_sids_beam(
    items: list[dict], held_files: list[str], job: SidJob, staging: str, engine_args: list[str]
) -> None:
    """Stage ``semantic_ids`` envelopes for ``items`` (item_id, embedding, lineage) under
    ``staging``; ``held_files`` are the Parquet files of the current semantic_ids table."""
    with beam.Pipeline(options=pipeline_options(engine_args)) as pipeline:
        coded = (
            pipeline
            | "SidItems" >> beam.Create(items)
            | "BatchSid" >> beam.BatchElements(min_batch_size=1, max_batch_size=4096)
            | "Code" >> beam.ParDo(CodeItems(job))
        )
        held = (
            pipeline
            | "HeldFiles" >> beam.Create(held_files)
            | "ReadHeld"
            >> beam.io.ReadAllFromParquet(columns=["item_id", "codes", "dedup", "codebook_version"])
            | "ThisVersion" >> beam.Filter(lambda row: row["codebook_version"] == job.version)
            | "KeyHeld" >> beam.Map(lambda row: (row["item_id"], (row["codes"], row["dedup"])))
        )
        (
            {"coded": coded, "held": held}
            | "JoinItem" >> beam.CoGroupByKey()
            | "ByCodes" >> beam.FlatMap(_to_dedup_group)
            | "GroupCodes" >> beam.GroupByKey()
            | "Dedup" >> beam.ParDo(GroupSidRows(job))
            | "StageSids"
            >> beam.io.WriteToParquet(
                f"{staging}/sids", ENVELOPE_SCHEMA, file_name_suffix=".parquet"
            )
        )


__all__ = ["process_beam", "build_pipeline", "StagesDoFn", "assign_sids_beam"]
