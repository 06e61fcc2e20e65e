"""The inputs of an evaluation: an interactions table and the lake's item features."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import storage

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
FEATURE_TABLES = ("descriptions", "embeddings", "semantic_ids", "codebooks")


def read_interactions(uri: str, min_rating: float | None = None) -> pa.Table:
    """``user_id, item_id, timestamp[, rating]`` from Parquet or CSV, ids as strings."""
    if not storage.exists(uri):
        raise ValueError(f"--interactions {uri} does not exist: give a Parquet or CSV file")
    table = _read_any(uri)
    missing = [c for c in INTERACTION_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"--interactions {uri} lacks column(s) {missing}; it needs user_id, item_id, "
            f"timestamp and optionally rating (has {table.column_names})"
        )
    if min_rating is not None:
        if "rating" not in table.column_names:
            raise ValueError(f"evaluate.min_rating is set but {uri} has no rating column")
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
    raise ValueError(f"--interactions {uri}: use a .parquet, .csv or .tsv file")


def _as_int64(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps only order events: numbers or timestamps become int64."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return column.cast(pa.timestamp("us")).cast(pa.int64())
    if pa.types.is_string(column.type):
        return pc.strptime(column, "%Y-%m-%dT%H:%M:%S", "us").cast(pa.int64())
    return column.cast(pa.int64())


@dataclass
class ItemFeatures:
    """Per-item features from the lake, keyed by item_id, and where they came from."""

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    sid_tokens: dict[str, list[str]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # title + tags, for the metadata baseline
    lineage: dict[str, Any] = field(default_factory=dict)


def resolve_versions(store, release: str | None, versions: dict[str, int]) -> dict[str, int | None]:
    """The table versions to read: a release's, explicit ones, else each table's latest."""
    unknown = sorted(set(versions) - set(FEATURE_TABLES))
    if unknown:
        raise ValueError(f"--versions {unknown}: tables are {', '.join(FEATURE_TABLES)}")
    if release:
        from jobs.publish import release_versions

        pinned = release_versions(store.lake, release)
        return {name: pinned.get(name) for name in FEATURE_TABLES}
    chosen = {name: versions.get(name, store.version(name)) for name in FEATURE_TABLES}
    for name, version in versions.items():
        latest = store.version(name)
        if latest is None or not 0 <= version <= latest:
            raise ValueError(
                f"--versions {name}={version}: table '{name}' has versions 0..{latest} "
                f"under {store.lake}"
            )
    return chosen


def load_features(store, versions: dict[str, int | None]) -> ItemFeatures:
    """Read embeddings, SIDs and title/tags at ``versions`` (absent tables give no features)."""
    features = ItemFeatures(lineage={"table_versions": versions})
    if versions.get("embeddings") is not None:
        table = store.read("embeddings", version=versions["embeddings"])
        features.embeddings = embedding_map(table)
        features.lineage["encoder"] = _values(table, "encoder")
    if versions.get("semantic_ids") is not None:
        table = store.read(
            "semantic_ids",
            version=versions["semantic_ids"],
            columns=["item_id", "codes", "prefix_ngrams", "codebook_version"],
        )
        features.sid_tokens = {
            row["item_id"]: sid_tokens(row["codes"], row["prefix_ngrams"])
            for row in table.to_pylist()
        }
        features.lineage["codebook_version"] = _values(table, "codebook_version")
    if versions.get("descriptions") is not None:
        table = store.read(
            "descriptions",
            version=versions["descriptions"],
            columns=["item_id", "title", "tags", "describer", "prompt_version"],
        )
        features.texts = {r["item_id"]: metadata_text(r) for r in table.to_pylist()}
        features.texts = {k: v for k, v in features.texts.items() if v}
        features.lineage["describer"] = _values(table, "describer")
        features.lineage["prompt_version"] = _values(table, "prompt_version")
    return features


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


def _values(table: pa.Table, column: str) -> str | None:
    """The distinct values of a lineage column, most common first, comma-joined."""
    counts = Counter(v for v in table.column(column).to_pylist() if v)
    return ",".join(v for v, _ in counts.most_common()) or None


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
