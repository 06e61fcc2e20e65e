"""Map pipeline records to table rows. Every engine writes rows built here, so tables match."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.tables import LINEAGE_COLUMNS
from transforms.stage import ERROR_KEY, Record, has_error


def utc_now() -> datetime:
    return datetime.now(UTC)


def _lineage(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    return {**{k: record.get(k) for k in LINEAGE_COLUMNS}, "run_id": run_id, "updated_at": now}


# The record fields each table's rows read (besides LINEAGE_COLUMNS); the stage-chain test
# checks that the stages produce every one of them.
DESCRIPTION_FIELDS = (
    "item_id",
    "uri",
    "title",
    "tags",
    "published_at",
    "text",
    "description",
    "description_tokens",
    "prompt_tokens",
    "describe_latency_ms",
    "served_model",
    "transcript",
    "transcript_language",
    "transcript_segments",
    "speech_s",
    "ocr_text",
    "ocr_lines",
    "asr_model",
    "media_kind",
    "video_codec",
    "audio_codec",
    "file_size",
    "duration_s",
    "fps",
    "width",
    "height",
    "has_audio",
    "frames_sampled",
    "frame_timestamps_s",
    "prompt_rendered_sha",
    "prompt_truncated",
    "visual_tags",
    "visual_shots",
    "shot_count",
    "visual_model",
    "grounding",
    "frame_count",
    "audio_error",
    "audio_events",
    "loudness_lufs",
    "silence_share",
    "audio_model",
    "describe_video_input",
    "describe_audio_input",
    "describe_frames",
)
EMBEDDING_FIELDS = ("item_id", "embedding", "encoded_text_sha")
ERROR_FIELDS = ("item_id", "uri", "content_sha256", "pipeline_fingerprint")


def description_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    row = {f: record.get(f) for f in DESCRIPTION_FIELDS}
    lineage = _lineage(record, run_id, now)
    lineage.pop("encoder")
    return {**row, **lineage}


def embedding_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    vector = record["embedding"]
    return {
        "item_id": record["item_id"],
        "embedding": [float(x) for x in vector],
        "dim": len(vector),
        "encoded_text_sha": record.get("encoded_text_sha"),
        **_lineage(record, run_id, now),
    }


def error_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    error = record[ERROR_KEY]
    return {
        "item_id": record["item_id"],
        "uri": record.get("uri"),
        "stage": error["stage"],
        "code": error["code"],
        "message": error["message"],
        "content_sha256": record.get("content_sha256"),
        "pipeline_fingerprint": record.get("pipeline_fingerprint"),
        "run_id": run_id,
        "updated_at": now,
    }


def table_rows(records: list[Record], run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The rows processed records add: descriptions and embeddings, or one error each."""
    now = utc_now()
    good = [r for r in records if not has_error(r)]
    return {
        "descriptions": [description_row(r, run_id, now) for r in good],
        "embeddings": [embedding_row(r, run_id, now) for r in good],
        "errors": [error_row(r, run_id, now) for r in records if has_error(r)],
    }
