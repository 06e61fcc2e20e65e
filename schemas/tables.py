"""One Arrow schema per table. Everything else (Delta, Spark) derives from these."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import pyarrow as pa

SCHEMA_VERSION = 1

_TS = pa.timestamp("us", tz="UTC")

# Lineage every feature row carries: what produced it and in which run.
_LINEAGE = [
    pa.field("content_sha256", pa.string()),  # of the media bytes; of the metadata without media
    pa.field("pipeline_fingerprint", pa.string()),
    pa.field("describer", pa.string()),
    pa.field("describer_revision", pa.string()),
    pa.field("prompt_version", pa.string()),
    pa.field("prompt_sha", pa.string()),
    pa.field("encoder", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("updated_at", _TS, nullable=False),
]
# The lineage columns a record carries from its stages (run_id and updated_at come from the run).
LINEAGE_COLUMNS = tuple(f.name for f in _LINEAGE if f.name not in ("run_id", "updated_at"))

DESCRIPTIONS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("title", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("published_at", pa.string()),
        pa.field("text", pa.string()),  # the manifest's free text (synopsis, caption), if any
        pa.field("description", pa.string()),
        pa.field("description_tokens", pa.int32()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("describe_latency_ms", pa.float32()),
        pa.field("served_model", pa.string()),
        pa.field("transcript", pa.string()),
        pa.field("transcript_language", pa.string()),
        pa.field(
            "transcript_segments",
            pa.list_(
                pa.struct(
                    [
                        ("start", pa.float32()),
                        ("end", pa.float32()),
                        ("text", pa.string()),
                        ("avg_logprob", pa.float32()),
                        ("no_speech_prob", pa.float32()),
                    ]
                )
            ),
        ),
        pa.field("speech_s", pa.float32()),
        pa.field("ocr_text", pa.string()),
        pa.field(
            "ocr_lines",
            pa.list_(
                pa.struct(
                    [
                        ("text", pa.string()),
                        ("score", pa.float32()),
                        ("t", pa.float32()),
                    ]
                )
            ),
        ),
        pa.field("asr_model", pa.string()),
        pa.field("media_kind", pa.string()),  # video, audio, or text (no media: uri is null)
        pa.field("video_codec", pa.string()),
        pa.field("audio_codec", pa.string()),
        pa.field("file_size", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("has_audio", pa.bool_()),
        pa.field("frames_sampled", pa.int32()),
        pa.field("frame_timestamps_s", pa.list_(pa.float32())),
        pa.field("prompt_rendered_sha", pa.string()),
        pa.field("prompt_truncated", pa.list_(pa.string())),  # data fields cut to the budget
        pa.field(
            "visual_tags",
            pa.list_(
                pa.struct(
                    [("label", pa.string()), ("score", pa.float32()), ("share", pa.float32())]
                )
            ),
        ),
        pa.field(
            "visual_shots",
            pa.list_(
                pa.struct(
                    [
                        ("start_s", pa.float32()),
                        ("end_s", pa.float32()),
                        ("labels", pa.list_(pa.string())),
                    ]
                )
            ),
        ),
        pa.field("shot_count", pa.int32()),
        pa.field("visual_model", pa.string()),
        pa.field("grounding", pa.float32()),
        pa.field("frame_count", pa.int64()),  # frames in the source video (0: audio or text)
        pa.field("audio_error", pa.string()),  # why an unreadable audio track was skipped
        # What the clip sounds like (transforms/audio.py): speech, singing, music segments
        pa.field(
            "audio_events",
            pa.list_(
                pa.struct(
                    [("label", pa.string()), ("start_s", pa.float32()), ("end_s", pa.float32())]
                )
            ),
        ),
        pa.field("loudness_lufs", pa.float32()),  # integrated loudness (ITU-R BS.1770), LUFS
        pa.field("silence_share", pa.float32()),  # share of 100 ms windows below silence_dbfs
        pa.field("audio_model", pa.string()),
        # How the describer was shown the item (transforms/describe/base.py ShownInputs)
        pa.field("describe_video_input", pa.string()),
        pa.field("describe_audio_input", pa.string()),
        pa.field("describe_frames", pa.int32()),
        # Why the describer stopped: stop, or length (cut at describe.max_new_tokens); the
        # server's word for openai (eos_token from TGI, ...). Null: written before this column.
        pa.field("describe_finish_reason", pa.string()),
        *[f for f in _LINEAGE if f.name != "encoder"],
    ]
)

EMBEDDINGS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("dim", pa.int32()),
        pa.field("encoded_text_sha", pa.string()),
        *_LINEAGE,
    ]
)

SEMANTIC_IDS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("codes", pa.list_(pa.int32())),
        pa.field("dedup", pa.int32()),
        pa.field("sid", pa.string()),
        pa.field("codebook_version", pa.string()),
        pa.field("prefix_ngrams", pa.list_(pa.string())),
        pa.field("prefix_hashes", pa.list_(pa.int64())),
        pa.field("sid_pieces", pa.list_(pa.string())),
        *_LINEAGE,
    ]
)

CODEBOOKS = pa.schema(
    [
        pa.field("codebook_version", pa.string(), nullable=False),
        pa.field("method", pa.string()),
        pa.field("levels", pa.int32()),
        pa.field("codebook_size", pa.int32()),
        pa.field("codebook_size_requested", pa.int32()),
        pa.field("dim", pa.int32()),
        pa.field("encoder", pa.string()),
        pa.field("n_fit", pa.int64()),
        pa.field("weights_npz", pa.binary()),
        pa.field("sentencepiece_model", pa.binary()),
        pa.field("metrics_json", pa.string()),
        pa.field("config_json", pa.string()),
        # Promotion (pipelines/promotion.py): 'candidate' or 'refused' (fit-sids, not in use),
        # 'promoted' (``auto`` pins the most recently promoted); null: fitted by a run;
        # 'superseded': a run's fit that lost the race for a lake's first codebook.
        pa.field("promotion_status", pa.string()),
        pa.field("promoted_at", _TS),
        pa.field("promotion_note", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("updated_at", _TS, nullable=False),
    ]
)

ERRORS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("content_sha256", pa.string()),
        pa.field("pipeline_fingerprint", pa.string()),  # the stages that failed on it
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("updated_at", _TS, nullable=False),
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string()),  # running, succeeded, failed, sids_failed, interrupted
        pa.field("engine", pa.string()),
        pa.field("input", pa.string()),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("items", pa.int64()),
        pa.field("succeeded", pa.int64()),
        pa.field("skipped", pa.int64()),
        pa.field("failed", pa.int64()),
        # Items of a media-folder input that earlier runs enriched and that are gone now.
        pa.field("missing_input", pa.int64()),
        pa.field("config_fingerprint", pa.string()),
        pa.field("config_json", pa.string()),
        pa.field("stage_fingerprints_json", pa.string()),
        pa.field("stage_stats_json", pa.string()),
        pa.field("table_versions_json", pa.string()),
        pa.field("codebook_version", pa.string()),
        pa.field("tool_version", pa.string()),
        pa.field("updated_at", _TS, nullable=False),
    ]
)

# One row per published release (``enrich publish``): the table versions downstream reads.
RELEASES = pa.schema(
    [
        pa.field("release_id", pa.string(), nullable=False),
        pa.field("table_versions_json", pa.string()),
        pa.field("codebook_versions_json", pa.string()),
        pa.field("row_counts_json", pa.string()),
        pa.field("note", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("validation_id", pa.string()),  # the validation whose versions it pins
        pa.field("updated_at", _TS, nullable=False),
    ]
)

# One row per ``enrich validate``: the verdict on a run and the table versions it checked,
# which ``enrich publish`` pins.
VALIDATIONS = pa.schema(
    [
        pa.field("validation_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("passed", pa.bool_()),
        pa.field("table_versions_json", pa.string()),
        pa.field("checks_json", pa.string()),
        pa.field("updated_at", _TS, nullable=False),
    ]
)


# One row per (evaluation, task, model, item representation, slice) of ``enrich evaluate``:
# what a small recommender (task ``recommendation``) or a retriever (task ``search``: Recall@10,
# Recall@30, nDCG@10 over held-out queries) scores with the lake's features, and the lineage of
# those features. A metric a task does not measure is null.
_MEAN_STD = [
    pa.field(f"{metric}_{stat}", pa.float64())
    for metric in ("hr_at_10", "ndcg_at_10", "recall_at_50", "recall_at_10", "recall_at_30")
    for stat in ("mean", "std")
]
EVALUATIONS = pa.schema(
    [
        # id/model/representation/slice; search rows: id/search/model/representation/slice
        pa.field("evaluation_key", pa.string(), nullable=False),
        pa.field("evaluation_id", pa.string(), nullable=False),
        pa.field("task", pa.string()),  # recommendation | search (null: written before search)
        pa.field("model", pa.string()),
        pa.field("representation", pa.string()),
        pa.field("slice", pa.string()),
        *_MEAN_STD,
        pa.field("per_seed_json", pa.string()),
        pa.field("seeds", pa.list_(pa.int32())),
        pa.field("cases", pa.int64()),
        pa.field("items_without_features", pa.int64()),
        pa.field("cold_items_without_features", pa.int64()),
        pa.field("interactions", pa.string()),
        pa.field("queries", pa.string()),  # the queries table of a search row
        pa.field("release_id", pa.string()),
        pa.field("table_versions_json", pa.string()),
        pa.field("codebook_version", pa.string()),
        pa.field("describer", pa.string()),
        pa.field("prompt_version", pa.string()),
        pa.field("encoder", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("config_json", pa.string()),
        pa.field("counts_json", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("updated_at", _TS, nullable=False),
    ]
)


# One row per item re-coded onto a new codebook (``enrich assign-sids`` after a promotion or
# refit): its SID before and after, so downstream features can follow it (pipelines/crosswalk.py).
SID_CROSSWALK = pa.schema(
    [
        pa.field("crosswalk_key", pa.string(), nullable=False),  # new_codebook_version/item_id
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("old_codebook_version", pa.string()),
        pa.field("old_sid", pa.string()),
        pa.field("new_codebook_version", pa.string()),
        pa.field("new_sid", pa.string()),
        pa.field("level_1_changed", pa.bool_()),
        pa.field("level_2_changed", pa.bool_()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("updated_at", _TS, nullable=False),
    ]
)

# Staged by engine tasks, never a Delta table: items coded with the pinned codebook, before the
# dedup group-by (``bucket`` is a hash of the codes: the group-by's partition).
SID_CODES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("codes", pa.list_(pa.int32())),
        pa.field("choices", pa.list_(pa.int32())),  # last-level codes it may move to
        pa.field("bucket", pa.int32()),
        *[f for f in _LINEAGE if f.name in LINEAGE_COLUMNS],
    ]
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: str


# The tables a consumer reads, for type checkers and editors; tests/test_tables_contract.py
# holds it to TABLES.
TableName = Literal[
    "descriptions",
    "embeddings",
    "semantic_ids",
    "codebooks",
    "errors",
    "runs",
    "releases",
    "validations",
    "evaluations",
    "sid_crosswalk",
]

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("descriptions", DESCRIPTIONS, "item_id"),
        TableSpec("embeddings", EMBEDDINGS, "item_id"),
        TableSpec("semantic_ids", SEMANTIC_IDS, "item_id"),
        TableSpec("codebooks", CODEBOOKS, "codebook_version"),
        TableSpec("errors", ERRORS, "item_id"),
        TableSpec("runs", RUNS, "run_id"),
        TableSpec("releases", RELEASES, "release_id"),
        TableSpec("validations", VALIDATIONS, "validation_id"),
        TableSpec("evaluations", EVALUATIONS, "evaluation_key"),
        TableSpec("sid_crosswalk", SID_CROSSWALK, "crosswalk_key"),
    )
}


def column(table: str, name: str) -> str:
    """``name``, if ``table`` (or the staged ``sid_codes``) has that column. Modules outside
    schemas/ name the columns they read through these constants, so a renamed column fails
    at import instead of reading nothing."""
    schema = SID_CODES if table == "sid_codes" else TABLES[table].schema
    if name not in schema.names:
        raise KeyError(f"table '{table}' has no column '{name}'")
    return name


ITEM_ID = column("descriptions", "item_id")
EMBEDDING = column("embeddings", "embedding")
ENCODER = column("embeddings", "encoder")
CONTENT_SHA256 = column("errors", "content_sha256")
PIPELINE_FINGERPRINT = column("errors", "pipeline_fingerprint")
ERROR_CODE = column("errors", "code")
CODES = column("semantic_ids", "codes")
DEDUP = column("semantic_ids", "dedup")
CODEBOOK_VERSION = column("semantic_ids", "codebook_version")
CHOICES = column("sid_codes", "choices")
BUCKET = column("sid_codes", "bucket")


class RunStatus(StrEnum):
    """The values of ``runs.status``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SIDS_FAILED = "sids_failed"
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM; staging kept for enrich run --resume
