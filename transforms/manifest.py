"""Read the input: a directory of media files or a manifest (JSONL, CSV, Parquet), on any storage.

Every item becomes a record with ``item_id``, ``uri`` and optional metadata (``title``,
``tags``, ``text``, ``published_at``). A manifest row may leave out ``uri`` when it has a
``title`` or a ``text``: a text-only item, described from its metadata (``uri`` is None).
A bad manifest fails fast; a bad *item* is the media stage's job.

Manifests are read exactly as written: CSV cells are strings (``007`` stays ``007``, ``NA``
stays ``NA``; only an empty cell is absent), JSONL and Parquet ids must be strings or integers,
and every item_id is put in Unicode NFC, so ``café`` typed in either form is one id (two ids
that differ only in their normalization fail fast, like any duplicate).

The driver only *plans* (``plan_input``): it streams the manifest once to validate it and
count its rows, and cuts it into ``InputShard``s (a row range and, for JSONL, the byte offset
where it starts). Engine tasks read their own shard (``read_shard``) through the storage
layer, so the driver never holds the items.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from transforms import storage
from transforms.errors import UsageError
from transforms.stage import Record

logger = logging.getLogger(__name__)

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
METADATA_FIELDS = ("title", "tags", "text", "published_at")
RECORD_FIELDS = ("item_id", "uri", *METADATA_FIELDS)  # every record read from an input has these
TEXT_ITEM_FIELDS = ("title", "text")  # a row without a uri needs one of these
TEXT_ONLY = "text"  # the media_kind of an item without media (the media stage sets it)
MANIFEST_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
HASH_CHUNK_BYTES = 4 << 20
JSON_BLANKS = b" \t\r\n"  # the only whitespace JSON allows between tokens
UTF8_BOM = b"\xef\xbb\xbf"


class ManifestError(UsageError):
    """The input itself is unusable (not one item in it): fail fast."""


@dataclass(frozen=True)
class InputShard:
    """One task's share of the input: rows [start, stop) of one manifest file, or a list of
    media files of a folder (``names``)."""

    task_id: str
    source: str
    fmt: str
    start: int
    stop: int
    byte_offset: int = 0
    names: tuple[str, ...] = ()

    @property
    def items(self) -> int:
        return self.stop - self.start


def input_format(uri: str) -> str:
    """``media`` for a folder, else the manifest format from the file suffix."""
    if storage.is_dir(uri):
        return "media"
    if not storage.exists(uri):
        raise ManifestError(f"--input {uri} does not exist")
    fmt = MANIFEST_FORMATS.get(Path(storage.name_of(uri)).suffix.lower())
    if fmt is None:
        raise ManifestError(
            f"--input {uri}: expected a directory or a .jsonl/.csv/.parquet manifest"
        )
    return fmt


def read_input(uri: str | Path) -> list[Record]:
    """Every record of a media folder or manifest, validated (small inputs and tools)."""
    shards = plan_input(str(uri), items_per_task=1 << 62)
    return [record for shard in shards for record in read_shard(shard)]


def plan_input(uri: str, items_per_task: int, slots: int = 1) -> list[InputShard]:
    """Validate the input in one streaming pass and cut it into shards of about
    ``items_per_task`` items, in whole waves of ``slots`` tasks."""
    try:
        uri = storage.normalize(str(uri))
    except storage.StorageError as exc:
        raise ManifestError(f"--input {exc}") from None
    fmt = input_format(uri)
    if fmt == "media":
        names = media_files(uri)
        _check_media_ids(uri, names)
        bounds = shard_bounds(len(names), items_per_task, slots)
        return [
            InputShard(f"{i:05d}", uri, fmt, a, b, names=tuple(names[a:b]))
            for i, (a, b) in enumerate(bounds)
        ]
    total = validate_manifest(uri, fmt)
    bounds = shard_bounds(total, items_per_task, slots)
    offsets = _row_offsets(uri, [a for a, _ in bounds]) if fmt == "jsonl" else {}
    return [
        InputShard(f"{i:05d}", uri, fmt, a, b, byte_offset=offsets.get(a, 0))
        for i, (a, b) in enumerate(bounds)
    ]


def plan_inputs(uris: list[str], items_per_task: int, slots: int = 1) -> list[InputShard]:
    """``plan_input`` over several inputs (a day's manifest files), task ids kept unique."""
    if len(uris) == 1:
        return plan_input(uris[0], items_per_task, slots)
    return [
        replace(shard, task_id=f"{number:03d}-{shard.task_id}")
        for number, uri in enumerate(uris)
        for shard in plan_input(uri, items_per_task, slots)
    ]


def shard_bounds(total: int, per_task: int, slots: int) -> list[tuple[int, int]]:
    """Row ranges: about ``per_task`` rows each, rounded up to whole waves of ``slots`` tasks
    so the last wave leaves no core idle (never more tasks than rows)."""
    if total == 0:
        return []
    tasks = max(1, -(-total // max(1, per_task)))
    tasks = max(1, min(total, -(-tasks // max(1, slots)) * max(1, slots)))
    size, extra = divmod(total, tasks)
    bounds, start = [], 0
    for i in range(tasks):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def validate_manifest(uri: str, fmt: str) -> int:
    """Stream every row once: fail fast on a malformed row or a duplicate item_id (after NFC
    normalization, as ``read_shard`` gives it); return the row count. Only a 64-bit hash per
    item_id is kept; a repeated hash is confirmed by a second pass before it fails."""
    seen: set[int] = set()
    count = changed = 0
    for number, row in _rows(uri, fmt):
        item_id = _checked_id(row, number, uri)
        changed += item_id != str(row["item_id"])
        key = _id_key(item_id)
        if key in seen:
            _fail_if_duplicate(uri, fmt, item_id, str(row["item_id"]), number)
        seen.add(key)
        count += 1
    if changed:
        logger.info("%s: %d item_ids put in Unicode NFC", uri, changed)
    return count


def _id_key(item_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big")


def _fail_if_duplicate(uri: str, fmt: str, item_id: str, raw: str, number: int) -> None:
    """Raise naming both rows when an earlier row has the same (normalized) item_id."""
    for first, row in _rows(uri, fmt):
        if first >= number:
            return  # two ids with one 64-bit hash: not a duplicate
        if _checked_id(row, first, uri) == item_id:
            _raise_duplicate(
                uri, item_id, (f"row {first}", str(row["item_id"])), (f"row {number}", raw)
            )


def _raise_duplicate(
    origin: str, item_id: str, first: tuple[str, str], second: tuple[str, str]
) -> None:
    """A ManifestError for two entries (where, raw id) that are one item_id."""
    if first[1] == second[1]:
        raise ManifestError(
            f"{origin}: item_id {item_id!r} appears twice ({first[0]} and {second[0]}); "
            "give each item its own id"
        )
    message = (
        f"{origin}: item_ids {ascii(first[1])} ({first[0]}) and {ascii(second[1])} "
        f"({second[0]}) are the same id {item_id!r} after Unicode NFC normalization; "
        "give each item its own id"
    )
    logger.warning(message)
    raise ManifestError(message)


def _check_media_ids(base: str, names: list[str]) -> None:
    """Fail fast when two media files of a folder have the same item_id after NFC."""
    seen: dict[str, str] = {}
    for uri in names:
        item_id = _media_id(base, uri)
        if item_id in seen:
            raw = (seen[item_id][len(base) :].lstrip("/"), uri[len(base) :].lstrip("/"))
            _raise_duplicate(
                base, item_id, (f"file {raw[0]!r}", raw[0]), (f"file {raw[1]!r}", raw[1])
            )
        seen[item_id] = uri


def read_shard(shard: InputShard) -> list[Record]:
    """The normalized records of one shard (what an engine task reads)."""
    if shard.fmt == "media":
        base = shard.source
        return [_media_record(base, name) for name in shard.names]
    rows = _rows(shard.source, shard.fmt, shard.start, shard.byte_offset)
    base = storage.parent(shard.source)
    records = []
    for number, row in rows:
        if number > shard.stop:
            break
        records.append(_record(row, number, shard.source, base))
    return records


def media_files(folder: str) -> list[str]:
    return [
        uri for uri in storage.list_files(folder) if Path(uri).suffix.lower() in MEDIA_EXTENSIONS
    ]


def _media_id(base: str, uri: str) -> str:
    """The file's path relative to the folder, in Unicode NFC (the file keeps its name)."""
    return unicodedata.normalize("NFC", uri[len(base) :].lstrip("/"))


def _media_record(base: str, uri: str) -> Record:
    return {
        "item_id": _media_id(base, uri),
        "uri": uri,
        "title": None,
        "tags": [],
        "text": None,
        "published_at": None,
    }


def _rows(uri: str, fmt: str, start: int = 0, byte_offset: int = 0):
    """(1-based row number, dict) from row ``start`` on, streamed."""
    if fmt == "jsonl":
        yield from _jsonl_rows(uri, start, byte_offset)
        return
    fs, path = storage.resolve(uri)
    if fmt == "csv":
        with fs.open_input_stream(path) as stream:
            header = pacsv.open_csv(stream).schema.names
        with fs.open_input_stream(path) as stream:
            reader = pacsv.open_csv(
                stream,
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    null_values=[""],
                    strings_can_be_null=True,
                ),
            )
            yield from _numbered(reader, start)
        return
    with fs.open_input_file(path) as handle:
        yield from _numbered(pq.ParquetFile(handle).iter_batches(batch_size=4096), start)


def _numbered(batches, start: int):
    number = 0
    for batch in batches:
        if number + batch.num_rows <= start:
            number += batch.num_rows
            continue
        for row in batch.to_pylist():
            number += 1
            if number > start:
                yield number, row


def _jsonl_rows(uri: str, start: int, byte_offset: int):
    """Lines split on b"\\n" only (U+2028 and friends are valid inside JSON strings), UTF-8
    decoded strictly (a replaced byte would change an id silently)."""
    fs, path = storage.resolve(uri)
    number = start
    with fs.open_input_file(path) as handle:
        handle.seek(byte_offset)
        for index, raw in enumerate(_lines(handle)):
            if index == 0 and byte_offset == 0 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            if _blank(raw):
                continue
            number += 1
            try:
                row = json.loads(raw.strip(JSON_BLANKS).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ManifestError(
                    f"{uri}:{number}: not UTF-8 (byte {exc.start} of the line); "
                    "save the manifest as UTF-8"
                ) from None
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{uri}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{uri}:{number}: each line must be a JSON object")
            yield number, row


def _blank(raw: bytes) -> bool:
    """A line that holds no row (the planner's byte offsets and the reader agree on this)."""
    return not raw.strip(JSON_BLANKS) or raw.strip(JSON_BLANKS) == UTF8_BOM


def _lines(handle) -> Iterator[bytes]:
    pending = b""
    while chunk := handle.read(HASH_CHUNK_BYTES):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def _row_offsets(uri: str, starts: list[int]) -> dict[int, int]:
    """Byte offset of each wanted row index (0-based, counting non-empty lines)."""
    wanted, offsets = set(starts), {}
    fs, path = storage.resolve(uri)
    position, row = 0, 0
    with fs.open_input_file(path) as handle:
        for raw in _lines(handle):
            if not _blank(raw):
                if row in wanted:
                    offsets[row] = position
                row += 1
            position += len(raw) + 1
    return offsets


def _normalize_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
    return [str(t) for t in value]


def _checked_id(row: dict[str, Any], number: int, origin: str) -> str:
    """The row's item_id as a string in Unicode NFC; fail fast on a missing item_id, a row
    with neither a uri nor a title or text, an item_id that is not a string or an integer, or
    a uri that is not a string."""
    if _blank_value(row.get("item_id")):
        raise ManifestError(f"{origin}: row {number} lacks item_id")
    if _blank_value(row.get("uri")) and not any(_given(row, k) for k in TEXT_ITEM_FIELDS):
        raise ManifestError(
            f"{origin}: row {number} lacks uri: give it a uri (its media file) or, for an item "
            "without media, a title or text to describe it from"
        )
    item_id = row["item_id"]
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
        raise ManifestError(
            f"{origin}: row {number}: item_id {item_id!r} is a {type(item_id).__name__}; write "
            'it as a string ("007") or an integer (a float or other value would change the id '
            "silently: 7.0 is not 7, 1e19 loses digits)"
        )
    if not _blank_value(row.get("uri")) and not isinstance(row["uri"], str):
        raise ManifestError(
            f"{origin}: row {number}: uri {row['uri']!r} is a {type(row['uri']).__name__}; "
            "write it as a string"
        )
    return unicodedata.normalize("NFC", str(item_id))


def _blank_value(value: Any) -> bool:
    return value is None or value == ""


def _given(row: dict[str, Any], key: str) -> bool:
    """Whether the row has a non-blank ``key`` (whitespace alone gives nothing to describe)."""
    return not _blank_value(row.get(key)) and bool(str(row[key]).strip())


def _optional_text(row: dict[str, Any], key: str) -> str | None:
    return None if row.get(key) is None else str(row[key])


def _resolved_uri(uri: str, base: str) -> str:
    """``uri`` as written when it has a scheme or is absolute; else relative to ``base``."""
    is_uri = "://" in uri or uri[:5].lower() == "file:"
    if is_uri or Path(uri).is_absolute():
        return uri
    return str((Path(base) / uri).resolve()) if storage.is_local(base) else f"{base}/{uri}"


def _record(row: dict[str, Any], number: int, origin: str, base: str) -> Record:
    item_id = _checked_id(row, number, origin)
    uri = None if _blank_value(row.get("uri")) else _resolved_uri(row["uri"], base)
    return {
        "item_id": item_id,
        "uri": uri,
        "title": _optional_text(row, "title"),
        "tags": _normalize_tags(row.get("tags")),
        "text": _optional_text(row, "text"),
        "published_at": _optional_text(row, "published_at"),
    }


def metadata_sha256(record: Record) -> str:
    """The content hash of an item without media: sha256 of its metadata fields as canonical
    JSON (a changed title, tags, text or published_at is new content)."""
    metadata = {field: record.get(field) for field in METADATA_FIELDS}
    blob = json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def content_sha256(path: str | Path) -> str | None:
    """Stream the file through sha256 in chunks; None if it cannot be read."""
    try:
        return storage.local_copy(str(path)).sha256
    except OSError:
        return None
