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
QUERY_COLUMNS = ("query", "item_id")  # and optionally relevance, split
QUERY_SPLITS = ("train", "test")


def read_interactions(uri: str, min_rating: float | None = None) -> pa.Table:
    """``user_id, item_id, timestamp[, rating]`` from Parquet or CSV, ids as strings."""
    table = _read_columns(
        uri,
        "--interactions",
        INTERACTION_COLUMNS,
        "user_id, item_id, timestamp and optionally rating",
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


def read_queries(uri: str) -> pa.Table:
    """``query, item_id[, relevance][, split]`` from Parquet, CSV or JSON Lines: a search log's
    (query, relevant item) pairs. ``relevance`` (default 1) is the nDCG gain, rows at 0 or
    below are judged not relevant; ``split`` is ``train`` or ``test`` on every row, or absent.
    A table that breaks these rules is a ``UsageError`` saying what to fix."""
    table = _read_columns(
        uri, "--queries", QUERY_COLUMNS, "query, item_id and optionally relevance and split"
    )
    if not table.num_rows:
        raise UsageError(f"--queries {uri} has no rows")
    queries = _strings(table, "query", uri)
    items = _strings(table, "item_id", uri)
    return pa.table(
        {
            "query": queries,
            "item_id": items,
            "relevance": _relevance(table, uri),
            "split": _split_column(table, uri),
        }
    )


def _strings(table: pa.Table, name: str, uri: str) -> pa.Array:
    """A column as non-empty strings; empty or null cells fail, naming the first row."""
    values = table[name].cast(pa.string()).to_pylist()
    empty = [row for row, value in enumerate(values) if value is None or not value.strip()]
    if empty:
        raise UsageError(
            f"--queries {uri}: {len(empty)} row(s) have an empty {name} (the first is row "
            f"{empty[0] + 1}); "
            "every row needs a query and an item_id"
        )
    return pa.array(values, pa.string())


def _relevance(table: pa.Table, uri: str) -> pa.Array:
    """``relevance`` as finite floats (1.0 when the column is absent)."""
    if "relevance" not in table.column_names:
        return pa.array([1.0] * table.num_rows, pa.float64())
    try:
        values = table["relevance"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise UsageError(
            f"--queries {uri}: relevance ({table['relevance'].type}) is not a number: give a "
            "graded gain (0 = not relevant, 1 = relevant, higher = more) or drop the column"
        ) from None
    if not np.isfinite(values).all():
        raise UsageError(f"--queries {uri}: relevance has empty, NaN or infinite values")
    return pa.array(values, pa.float64())


def _split_column(table: pa.Table, uri: str) -> pa.Array:
    """``split`` (``train``/``test`` on every row), or all null when the column is absent."""
    if "split" not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    values = table["split"].cast(pa.string()).to_pylist()
    wrong = sorted({str(v) for v in values if v not in QUERY_SPLITS})
    if wrong:
        raise UsageError(
            f"--queries {uri}: split has value(s) {wrong[:5]}; each row must be train or test "
            "(or drop the column to hold out evaluate.query_test_fraction of the queries)"
        )
    return pa.array(values, pa.string())


def _read_columns(uri: str, flag: str, columns: tuple[str, ...], needs: str) -> pa.Table:
    """The table at ``uri`` (given as ``flag``), which must exist and hold ``columns``."""
    if not storage.exists(uri):
        raise UsageError(f"{flag} {uri} does not exist: give a Parquet, CSV or JSONL file")
    table = _read_any(uri, flag)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UsageError(
            f"{flag} {uri} lacks column(s) {missing}; it needs {needs} (has {table.column_names})"
        )
    return table


def _read_any(uri: str, flag: str) -> pa.Table:
    """A Parquet (file or folder), CSV/TSV or JSON Lines file; one that does not parse is a
    ``UsageError`` naming it."""
    try:
        return _read_table(uri, flag)
    except pa.ArrowInvalid as exc:
        raise UsageError(f"{flag} {uri} cannot be read: {exc}") from None


def _read_table(uri: str, flag: str) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    fs, path = storage.resolve(uri)
    lower = uri.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        options = pcsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",")
        strings = {name: pa.string() for name in ("user_id", "item_id", "query", "split")}
        convert = pcsv.ConvertOptions(column_types=strings)
        with fs.open_input_stream(path) as handle:
            return pcsv.read_csv(handle, parse_options=options, convert_options=convert)
    if lower.endswith((".jsonl", ".json")):
        with fs.open_input_stream(path) as handle:
            return pjson.read_json(handle)
    if lower.endswith(".parquet") or storage.is_dir(uri):
        return pq.read_table(path, filesystem=fs)
    raise UsageError(f"{flag} {uri}: use a .parquet, .csv, .tsv or .jsonl file")


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
    descriptions: dict[str, str] = field(default_factory=dict)  # description text, for search


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
