"""The inputs of an evaluation: an interactions table and per-item features (read from the
lake by ``pipelines.evaluation``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import storage
from core.errors import UsageError

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
    # SID representation (``SID_REPRESENTATIONS``) → item_id → its tokens
    sid_tokens: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # title + tags, for the metadata baseline
    codes: dict[str, list[int]] = field(default_factory=dict)  # SID codes, for generative retrieval
    dedup: dict[str, int] = field(default_factory=dict)  # dedup suffix of each SID
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


def sid_code_tokens(codes: list[int] | None) -> list[str]:
    """``sid_codes``: one token per (level, code), e.g. ``["L0:12", "L1:201", "L2:33"]``."""
    return [f"L{level}:{int(code)}" for level, code in enumerate(codes or [])]


def sid_ngram_tokens(codes: list[int] | None, ngrams: list[str] | None) -> list[str]:
    """``sid``: the (level, code) tokens plus the longer prefix n-grams (2306.08121), e.g.
    ``["L0:12", "L1:201", "L2:33", "P:12_201", "P:12_201_33"]``."""
    if not codes:
        return []
    from transforms.semantic_ids.features import prefix_ngrams

    return sid_code_tokens(codes) + [f"P:{g}" for g in (ngrams or prefix_ngrams(codes))[1:]]


def sid_piece_tokens(codes: list[int] | None, pieces: list[str] | None) -> list[str]:
    """``sid_pieces``: the item's SentencePiece pieces (2306.08121), each tagged with the level
    it starts at, e.g. ``["L0:12_201", "L2:33"]``. The stored pieces carry codes only, so
    ``33`` at level 0 and at level 2 would read alike; the level is recovered by walking the
    pieces along the codes (past a code SentencePiece dropped as unknown). A piece found
    nowhere further along the codes is tagged ``L?``."""
    if not codes or not pieces:
        return []
    codes = [int(c) for c in codes]
    tokens, level = [], 0
    for piece in pieces:
        start = _piece_start(codes, [int(p) for p in piece.split("_")], level)
        if start is None:
            tokens.append(f"L?:{piece}")
            continue
        tokens.append(f"L{start}:{piece}")
        level = start + piece.count("_") + 1
    return tokens


def _piece_start(codes: list[int], parts: list[int], level: int) -> int | None:
    """The first level at or after ``level`` where ``parts`` run along ``codes``."""
    for start in range(level, len(codes) - len(parts) + 1):
        if codes[start : start + len(parts)] == parts:
            return start
    return None


SID_REPRESENTATIONS = ("sid", "sid_codes", "sid_pieces")


def sid_representation_tokens(row: dict[str, Any]) -> dict[str, list[str]]:
    """One ``semantic_ids`` row (``codes``, ``prefix_ngrams``, ``sid_pieces``) → its tokens
    under each SID representation."""
    codes = row.get("codes")
    return {
        "sid": sid_ngram_tokens(codes, row.get("prefix_ngrams")),
        "sid_codes": sid_code_tokens(codes),
        "sid_pieces": sid_piece_tokens(codes, row.get("sid_pieces")),
    }


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
