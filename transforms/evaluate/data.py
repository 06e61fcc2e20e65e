"""The inputs of an evaluation: an interactions table and per-item features (read from the
lake by ``pipelines.evaluation``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import storage
from transforms.errors import UsageError

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")


def read_interactions(uri: str, min_rating: float | None = None) -> pa.Table:
    """``user_id, item_id, timestamp[, rating]`` from Parquet or CSV, ids as strings."""
    if not storage.exists(uri):
        raise UsageError(f"--interactions {uri} does not exist: give a Parquet or CSV file")
    table = _read_any(uri)
    missing = [c for c in INTERACTION_COLUMNS if c not in table.column_names]
    if missing:
        raise UsageError(
            f"--interactions {uri} lacks column(s) {missing}; it needs user_id, item_id, "
            f"timestamp and optionally rating (has {table.column_names})"
        )
    if min_rating is not None:
        if "rating" not in table.column_names:
            raise UsageError(f"evaluate.min_rating is set but {uri} has no rating column")
        table = table.filter(pc.greater_equal(table["rating"], min_rating))
    return pa.table(
        {
            "user_id": table["user_id"].cast(pa.string()),
            "item_id": table["item_id"].cast(pa.string()),
            "timestamp": _as_int64(table["timestamp"]),
        }
    )


def _read_any(uri: str) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    fs, path = storage.resolve(uri)
    lower = uri.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        options = pcsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",")
        convert = pcsv.ConvertOptions(column_types={"user_id": pa.string(), "item_id": pa.string()})
        with fs.open_input_stream(path) as handle:
            return pcsv.read_csv(handle, parse_options=options, convert_options=convert)
    if lower.endswith(".parquet") or storage.is_dir(uri):
        return pq.read_table(path, filesystem=fs)
    raise UsageError(f"--interactions {uri}: use a .parquet, .csv or .tsv file")


def _as_int64(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps only order events: numbers, dates, timestamps or ISO 8601 text → int64."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.cast(pa.int64())
    try:
        return column.cast(pa.timestamp("us")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(
            f"interactions column timestamp ({column.type}) is not a number, a date, a "
            f"timestamp or ISO 8601 text: {exc}"
        ) from None


@dataclass
class ItemFeatures:
    """Per-item features from the lake, keyed by item_id, and where they came from."""

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    sid_tokens: dict[str, list[str]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # title + tags, for the metadata baseline
    lineage: dict[str, Any] = field(default_factory=dict)


def embedding_map(table: pa.Table) -> dict[str, np.ndarray]:
    """item_id → embedding (float32); embeddings of different sizes fail fast."""
    ids = table.column("item_id").to_pylist()
    vectors = table.column("embedding").to_pylist()
    sizes = {len(v) for v in vectors if v is not None}
    if len(sizes) > 1:
        raise ValueError(f"embeddings of sizes {sorted(sizes)}: evaluate one encoder at a time")
    return {
        i: np.asarray(v, dtype=np.float32)
        for i, v in zip(ids, vectors, strict=True)
        if v is not None
    }


def sid_tokens(codes: list[int] | None, ngrams: list[str] | None) -> list[str]:
    """An item's SID tokens: one per (level, code), plus its prefix n-grams (2306.08121)."""
    if not codes:
        return []
    from transforms.semantic_ids.features import prefix_ngrams

    levels = [f"L{level}:{int(code)}" for level, code in enumerate(codes)]
    return levels + [f"P:{g}" for g in (ngrams or prefix_ngrams(codes))[1:]]


def metadata_text(row: dict[str, Any]) -> str:
    """The metadata baseline's text: ``title. tag, tag``."""
    title = (row.get("title") or "").strip()
    tags = ", ".join(t for t in (row.get("tags") or []) if t)
    return ". ".join(part for part in (title, tags) if part)


def encode_texts(texts: dict[str, str], encode_config) -> dict[str, np.ndarray]:
    """The metadata baseline: the lake's sentence encoder over each item's title + tags."""
    from transforms.encode import EncodeStage

    if not texts:
        return {}
    stage = EncodeStage(encode_config)
    stage.setup()
    ids = sorted(texts)
    vectors = stage.encode_texts([texts[i] for i in ids])
    return dict(zip(ids, vectors, strict=True))
