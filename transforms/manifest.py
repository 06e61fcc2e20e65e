"""Read the input: a directory of media files or a manifest (JSONL, CSV, Parquet).

Every item becomes a record with ``item_id``, ``uri`` and optional metadata (``title``,
``tags``, ``published_at``). A bad manifest fails fast; a bad *item* is the media stage's job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from transforms.stage import Record

MEDIA_EXTENSIONS = {
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".flv",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".ts",
    ".3gp",
    ".wav",
    ".flac",
    ".ogg",
    ".mp3",
    ".m4a",
}
METADATA_FIELDS = ("title", "tags", "published_at")
HASH_CHUNK_BYTES = 4 << 20


class ManifestError(ValueError):
    """The input itself is unusable (not one item in it): fail fast."""


def read_input(path: str | Path) -> list[Record]:
    """Return one record per item from a media directory or a manifest file."""
    path = Path(path)
    if path.is_dir():
        return _records_from_directory(path)
    if not path.exists():
        raise ManifestError(f"--input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    elif suffix == ".csv":
        rows = pacsv.read_csv(path).to_pylist()
    elif suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        raise ManifestError(
            f"--input {path}: expected a directory or a .jsonl/.csv/.parquet manifest"
        )
    return _normalize_rows(rows, base=path.parent, origin=str(path))


def _records_from_directory(root: Path) -> list[Record]:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
    )
    return [
        {
            "item_id": p.relative_to(root).as_posix(),
            "uri": str(p.resolve()),
            "title": None,
            "tags": [],
            "published_at": None,
        }
        for p in files
    ]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{number}: each line must be a JSON object")
        rows.append(row)
    return rows


def _normalize_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
    return [str(t) for t in value]


def _normalize_rows(rows: list[dict[str, Any]], base: Path, origin: str) -> list[Record]:
    records, seen = [], set()
    for number, row in enumerate(rows, start=1):
        missing = [k for k in ("item_id", "uri") if not row.get(k)]
        if missing:
            raise ManifestError(f"{origin}: row {number} lacks {', '.join(missing)}")
        item_id = str(row["item_id"])
        if item_id in seen:
            raise ManifestError(f"{origin}: item_id {item_id!r} appears twice (row {number})")
        seen.add(item_id)
        uri = str(row["uri"])
        if "://" not in uri and not Path(uri).is_absolute():
            uri = str((base / uri).resolve())
        records.append(
            {
                "item_id": item_id,
                "uri": uri,
                "title": None if row.get("title") is None else str(row["title"]),
                "tags": _normalize_tags(row.get("tags")),
                "published_at": None
                if row.get("published_at") is None
                else str(row["published_at"]),
            }
        )
    return records


def content_sha256(path: str | Path) -> str | None:
    """Stream the file through sha256 in chunks; None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def records_to_table(records: list[Record]) -> pa.Table:
    """The input as an Arrow table (what engines shard)."""
    return pa.Table.from_pylist(
        [{k: r.get(k) for k in ("item_id", "uri", *METADATA_FIELDS)} for r in records]
    )
