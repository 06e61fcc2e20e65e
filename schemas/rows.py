"""Map pipeline records to table rows. Every engine writes rows built here, so tables match."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from transforms.stage import ERROR_KEY, Record


def utc_now() -> datetime:
    return datetime.now(UTC)


def _lineage(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    return {
        "content_sha256": record.get("content_sha256"),
        "pipeline_fingerprint": record.get("pipeline_fingerprint"),
        "describer": record.get("describer"),
        "describer_revision": record.get("describer_revision"),
        "prompt_version": record.get("prompt_version"),
        "prompt_sha": record.get("prompt_sha"),
        "encoder": record.get("encoder"),
        "run_id": run_id,
        "updated_at": now,
    }


def description_row(record: Record, run_id: str, now: datetime) -> dict[str, Any]:
    fields = (
        "item_id",
        "uri",
        "title",
        "tags",
        "published_at",
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
    )
    row = {f: record.get(f) for f in fields}
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
