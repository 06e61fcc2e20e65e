"""Read the input: a directory of media files or a manifest (JSONL, CSV, Parquet), on any storage.

Every item becomes a record with ``item_id``, ``uri`` and optional metadata (``title``,
``tags``, ``text``, ``published_at``). A manifest row may leave out ``uri`` when it has a
``title`` or a ``text``: a text-only item, described from its metadata (``uri`` is None).

Two kinds of problem. A problem of the whole input fails fast (``ManifestError``, exit 2): it
cannot be opened or parsed as its format (a 0-byte CSV, a ``.parquet`` that is not Parquet, a
FIFO), has duplicate CSV or Parquet column names, holds two rows with one item_id, or has rows
but not one usable row. A problem of one row (not JSON or not UTF-8, no item_id, a field of
the wrong type, NaN, a string that is not valid Unicode, a uri with a NUL byte) makes that row
an *error record*: it carries ``error`` (stage ``manifest``, code ``bad_row`` or ``bad_field``)
and a printable ``item_id`` (the id as written, with backslash escapes for what cannot be
stored, or ``<manifest name>#row-<n>`` when the id itself is missing or not an id), and becomes
one ``errors`` row while the other rows run. A bad *item* (its media) is the media stage's job.

Manifests are read exactly as written: CSV cells are strings (``007`` stays ``007``, ``NA``
stays ``NA``; only an empty cell is absent), binary cells are decoded as UTF-8, JSONL and
Parquet ids must be strings or integers, ids are never trimmed (an id with leading or trailing
whitespace is refused, so ``a`` and ``a `` cannot become two items), and every item_id is put in
Unicode NFC, so ``café`` typed in either form is one id (two ids that differ only in their
normalization fail fast, like any duplicate).

The driver only *plans* (``plan_input``): it streams the manifest once to validate it and
count its rows, and cuts it into ``TaskInput``s (a row range and, for JSONL, the byte offset
where it starts). Engine tasks read their own input (``read_task_input``) through the storage
layer, so the driver never holds the items.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import hashlib
import json
import logging
import math
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core import storage
from core.errors import EnrichError, UsageError
from transforms.stage import ERROR_KEY, Record, has_error, mark_error

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


class RowProblem(EnrichError, ValueError):
    """One row, or one of its fields, that cannot be read as written: the row becomes an error
    record with ``code`` (a registered error code); ``partial`` holds what was read of it."""

    def __init__(self, code: str, message: str, partial: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.partial = code, partial or {}


@dataclass(frozen=True)
class TaskInput:
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
    if storage.info(uri).type != pafs.FileType.File:
        raise ManifestError(f"--input {uri}: not a regular file (a FIFO, socket or device?)")
    return fmt


def read_input(uri: str | Path) -> list[Record]:
    """Every record of a media folder or manifest, validated (small inputs and tools)."""
    tasks = plan_input(str(uri), items_per_task=1 << 62)
    return [record for task in tasks for record in read_task_input(task)]


def plan_input(uri: str, items_per_task: int, parallel: int = 1) -> list[TaskInput]:
    """Validate the input in one streaming pass and cut it into tasks of about
    ``items_per_task`` items, in whole waves of ``parallel`` tasks."""
    try:
        uri = storage.normalize(str(uri))
    except storage.StorageError as exc:
        raise ManifestError(f"--input {exc}") from None
    fmt = input_format(uri)
    if fmt == "media":
        names = media_files(uri)
        _check_media_ids(uri, names)
        bounds = task_bounds(len(names), items_per_task, parallel)
        return [
            TaskInput(f"{i:05d}", uri, fmt, a, b, names=tuple(names[a:b]))
            for i, (a, b) in enumerate(bounds)
        ]
    total = validate_manifest(uri, fmt)
    bounds = task_bounds(total, items_per_task, parallel)
    offsets = _row_offsets(uri, [a for a, _ in bounds]) if fmt == "jsonl" else {}
    return [
        TaskInput(f"{i:05d}", uri, fmt, a, b, byte_offset=offsets.get(a, 0))
        for i, (a, b) in enumerate(bounds)
    ]


def plan_inputs(uris: list[str], items_per_task: int, parallel: int = 1) -> list[TaskInput]:
    """``plan_input`` over several inputs (a day's manifest files), task ids kept unique."""
    if len(uris) == 1:
        return plan_input(uris[0], items_per_task, parallel)
    return [
        replace(task, task_id=f"{number:03d}-{task.task_id}")
        for number, uri in enumerate(uris)
        for task in plan_input(uri, items_per_task, parallel)
    ]


def task_bounds(total: int, per_task: int, parallel: int) -> list[tuple[int, int]]:
    """Row ranges: about ``per_task`` rows each, rounded up to whole waves of ``parallel`` tasks
    so the last wave leaves no core idle (never more tasks than rows)."""
    if total == 0:
        return []
    tasks = max(1, -(-total // max(1, per_task)))
    tasks = max(1, min(total, -(-tasks // max(1, parallel)) * max(1, parallel)))
    size, extra = divmod(total, tasks)
    bounds, start = [], 0
    for i in range(tasks):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def validate_manifest(uri: str, fmt: str) -> int:
    """Stream every row once: fail fast on a duplicate item_id (after NFC normalization, as
    ``read_task_input`` gives it, error records included) or when no row is usable; return the row
    count. Only a 64-bit hash per item_id is kept; a repeated hash is confirmed by a second pass
    before it fails."""
    seen: set[int] = set()
    count = changed = refused = 0
    first_problem = None
    for number, row, record in _records(uri, fmt):
        item_id = record["item_id"]
        changed += item_id != _raw_id(row, item_id)
        if has_error(record):
            refused += 1
            first_problem = first_problem or record[ERROR_KEY]["message"]
        key = _id_key(item_id)
        if key in seen:
            _fail_if_duplicate(uri, fmt, item_id, _raw_id(row, item_id), number)
        seen.add(key)
        count += 1
    if count and refused == count:
        raise ManifestError(f"--input {uri}: not one usable row ({first_problem})")
    if changed:
        logger.info("%s: %d item_ids put in Unicode NFC or escaped", uri, changed)
    if refused:
        logger.warning("%s: %d of %d rows refused (one errors row each)", uri, refused, count)
    return count


def _records(uri: str, fmt: str) -> Iterator[tuple[int, Any, Record]]:
    """(row number, row as read, record) for every row, as ``read_task_input`` builds them."""
    base = storage.parent(uri)
    for number, row in _rows(uri, fmt):
        yield number, row, _record(row, number, uri, base)


def _raw_id(row: Any, item_id: str) -> str:
    """The row's item_id as written (for messages and the NFC count); ``item_id`` if none."""
    raw = row.get("item_id") if isinstance(row, dict) else None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "backslashreplace")
    return item_id if _blank_value(raw) else str(raw)


def _id_key(item_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big")


def _fail_if_duplicate(uri: str, fmt: str, item_id: str, raw: str, number: int) -> None:
    """Raise naming both rows when an earlier row has the same (normalized) item_id."""
    for first, row, record in _records(uri, fmt):
        if first >= number:
            return  # two ids with one 64-bit hash: not a duplicate
        if record["item_id"] == item_id:
            _raise_duplicate(
                uri, item_id, (f"row {first}", _raw_id(row, item_id)), (f"row {number}", raw)
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


def read_task_input(task: TaskInput) -> list[Record]:
    """The normalized records of one task (what an engine task reads)."""
    if task.fmt == "media":
        base = task.source
        return [_media_record(base, name) for name in task.names]
    rows = _rows(task.source, task.fmt, task.start, task.byte_offset)
    base = storage.parent(task.source)
    records = []
    for number, row in rows:
        if number > task.stop:
            break
        records.append(_record(row, number, task.source, base))
    return records


def media_files(folder: str) -> list[str]:
    return [
        uri for uri in storage.list_files(folder) if Path(uri).suffix.lower() in MEDIA_EXTENSIONS
    ]


def _media_id(base: str, uri: str) -> str:
    """The file's path relative to the folder, in Unicode NFC (the file keeps its name); bytes
    of a name that are not UTF-8 are backslash-escaped."""
    return unicodedata.normalize("NFC", _escaped(uri[len(base) :].lstrip("/")))


def _media_record(base: str, uri: str) -> Record:
    record = _bare_record(_media_id(base, uri), uri)
    if not _encodable(uri):  # a name that is not UTF-8 cannot be stored (nor read back)
        record["uri"] = _escaped(uri)
        mark_error(record, "manifest", "bad_field", "the file name is not UTF-8")
    return record


def _bare_record(item_id: str, uri: str | None) -> Record:
    return {
        "item_id": item_id,
        "uri": uri,
        "title": None,
        "tags": [],
        "text": None,
        "published_at": None,
    }


def _rows(uri: str, fmt: str, start: int = 0, byte_offset: int = 0):
    """(1-based row number, dict or RowProblem) from row ``start`` on, streamed. A file that
    cannot be parsed as its format is a ManifestError."""
    reader = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt]
    try:
        yield from reader(uri, start, byte_offset)
    except (pa.ArrowInvalid, PermissionError) as exc:
        raise ManifestError(f"--input {uri}: cannot be read as {fmt} ({exc})") from None


def _csv_rows(uri: str, start: int, byte_offset: int = 0):
    """Cells read as bytes (decoded per field, so one bad cell refuses one row); a line with
    the wrong number of cells is a RowProblem, counted after the file's other rows."""
    fs, path = storage.resolve(uri)
    invalid: list[str] = []
    parse = pacsv.ParseOptions(invalid_row_handler=lambda row: invalid.append(row.text) or "skip")
    with fs.open_input_stream(path) as stream:
        header = pacsv.open_csv(stream, parse_options=parse).schema.names
    _refuse_duplicate_columns(uri, header)
    invalid.clear()
    with fs.open_input_stream(path) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False),  # bad lines in file order
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.binary() for name in header},
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
        number = yield from _numbered(reader, start)
    for text in invalid:
        number += 1
        if number > start:
            yield number, _csv_cell_count_problem(text, header)


def _csv_cell_count_problem(text: str, header: list[str]) -> RowProblem:
    """A CSV line whose cells do not match the header; its item_id cell, if it has one, names
    the error record."""
    cells = next(csv.reader([text]), [])
    partial = dict(zip(header, cells, strict=False))
    return RowProblem(
        "bad_row",
        f"{len(cells)} cells where the header has {len(header)}: {text[:200]!r}",
        partial,
    )


def _parquet_rows(uri: str, start: int, byte_offset: int = 0):
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        _refuse_duplicate_columns(uri, parquet.schema_arrow.names)
        yield from _numbered(parquet.iter_batches(batch_size=4096), start)


def _refuse_duplicate_columns(uri: str, names: list[str]) -> None:
    """Two columns of one name would keep only the last value, silently."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ManifestError(f"--input {uri}: column {repeated[0]!r} appears more than once")


def _numbered(batches, start: int):
    """(number, row) from row ``start`` on; returns the number of rows read."""
    number = 0
    for batch in batches:
        if number + batch.num_rows <= start:
            number += batch.num_rows
            continue
        for row in batch.to_pylist():
            number += 1
            if number > start:
                yield number, row
    return number


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
            yield number, _jsonl_row(raw)


def _jsonl_row(raw: bytes) -> dict[str, Any] | RowProblem:
    """One line as a JSON object, or the RowProblem that makes it an error record."""
    try:
        row = json.loads(raw.strip(JSON_BLANKS).decode("utf-8"), object_pairs_hook=_json_object)
    except UnicodeDecodeError as exc:
        return RowProblem(
            "bad_row", f"not UTF-8 (byte {exc.start} of the line); save the manifest as UTF-8"
        )
    except json.JSONDecodeError as exc:
        return RowProblem("bad_row", f"not valid JSON ({exc.msg})")
    except RowProblem as problem:
        return problem
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting 100k deep
        return RowProblem("bad_row", f"not a JSON row this reader takes ({type(exc).__name__})")
    if not isinstance(row, dict):
        return RowProblem("bad_row", "each line must be a JSON object")
    return row


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice would keep its last value silently, so it is refused."""
    row = dict(pairs)
    if len(row) != len(pairs):
        repeated = next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i]))
        raise RowProblem("bad_row", f"key {_escaped(repeated)!r} appears twice", row)
    return row


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


def _record(row: dict[str, Any] | RowProblem, number: int, origin: str, base: str) -> Record:
    """The row as a record; an error record when the row or one of its fields is refused."""
    try:
        if isinstance(row, RowProblem):
            raise row
        return _checked_record(row, base)
    except RowProblem as problem:
        partial = problem.partial if isinstance(row, RowProblem) else row
        record = _bare_record(_fallback_id(partial, number, origin), _written_uri(partial))
        where = f"{storage.name_of(origin)} row {number}"
        return mark_error(record, "manifest", problem.code, f"{where}: {problem}")


def _checked_record(row: dict[str, Any], base: str) -> Record:
    item_id = _checked_id(row)
    uri = _checked_uri(row, base)
    record = {
        "item_id": item_id,
        "uri": uri,
        **{key: _optional_text(row, key) for key in ("title", "text", "published_at")},
        "tags": _normalize_tags(row.get("tags")),
    }
    if uri is None and not any((record[key] or "").strip() for key in TEXT_ITEM_FIELDS):
        raise RowProblem(
            "bad_row",
            "lacks uri: give it a uri (its media file) or, for an item without media, a title "
            "or text to describe it from",
        )
    return {key: record[key] for key in RECORD_FIELDS}


def _checked_id(row: dict[str, Any]) -> str:
    """The row's item_id as a string in Unicode NFC, as written (never trimmed)."""
    raw = row.get("item_id")
    if _blank_value(raw):
        raise RowProblem("bad_row", "lacks item_id")
    if isinstance(raw, bool) or not isinstance(raw, (str, int, bytes)):
        raise RowProblem(
            "bad_field",
            f'item_id {raw!r} is a {type(raw).__name__}; write it as a string ("007") or an '
            "integer (a float or other value would change the id silently: 7.0 is not 7, 1e19 "
            "loses digits, NaN is no id)",
        )
    item_id = unicodedata.normalize("NFC", _text(raw, "item_id"))
    if item_id != item_id.strip():
        raise RowProblem(
            "bad_field",
            f"item_id {item_id!r} starts or ends with whitespace; ids are not trimmed (two ids "
            "that look equal would be two items): trim it in the manifest",
        )
    if "\0" in item_id:
        raise RowProblem("bad_field", "item_id holds a NUL character")
    return item_id


def _checked_uri(row: dict[str, Any], base: str) -> str | None:
    raw = row.get("uri")
    if _blank_value(raw):
        return None
    if not isinstance(raw, (str, bytes)):
        raise RowProblem(
            "bad_field", f"uri {raw!r} is a {type(raw).__name__}; write it as a string"
        )
    uri = _text(raw, "uri")
    if "\0" in uri:
        raise RowProblem("bad_field", "uri holds a NUL character (no path or URI can)")
    return _resolved_uri(uri, base)


def _normalize_tags(value: Any) -> list[str]:
    """A list of tags, or one string of them separated by commas or semicolons."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        text = _text(value, "tags")
        return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]
    if not isinstance(value, (list, tuple)):
        raise RowProblem(
            "bad_field",
            f"tags {value!r} is a {type(value).__name__}; write a list of strings or one "
            'string ("cats, kittens")',
        )
    if any(tag is None or isinstance(tag, (list, tuple, dict)) for tag in value):
        raise RowProblem("bad_field", "tags hold a null or a nested value; write strings")
    return [_text(tag, "a tag") for tag in value]


def _optional_text(row: dict[str, Any], key: str) -> str | None:
    return None if row.get(key) is None else _text(row[key], key)


def _text(value: Any, name: str) -> str:
    """A scalar as the text it was written as (bytes decoded as UTF-8, numbers as digits); a
    RowProblem for a value that is not text or cannot be stored as it is."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowProblem("bad_field", f"{name} is not UTF-8 (byte {exc.start})") from None
    if isinstance(value, str):
        if not _encodable(value):
            raise RowProblem(
                "bad_field", f"{name} {_escaped(value)!r} holds a lone surrogate (not Unicode text)"
            )
        return value
    if isinstance(value, (float, decimal.Decimal)) and not math.isfinite(value):
        raise RowProblem("bad_field", f"{name} is {value} (NaN or infinite), not a value")
    if isinstance(value, bool) or not isinstance(
        value, (int, float, decimal.Decimal, datetime.date, datetime.time)
    ):
        raise RowProblem(
            "bad_field", f"{name} {value!r} is a {type(value).__name__}; write it as a string"
        )
    return str(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    """``text`` printable and storable: lone surrogates (from JSON escapes or file names that
    are not UTF-8) and NUL become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


def _fallback_id(row: dict[str, Any], number: int, origin: str) -> str:
    """A stable, printable item_id for an error record: the id as written (escaped) when it is
    a string or an integer, else ``<manifest name>#row-<n>``."""
    raw = row.get("item_id")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "backslashreplace")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, str) and raw.strip():
        return unicodedata.normalize("NFC", _escaped(raw))
    return f"{storage.name_of(origin)}#row-{number}"


def _written_uri(row: dict[str, Any]) -> str | None:
    """The row's uri as written (escaped) for the error row, when it is text."""
    raw = row.get("uri")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "backslashreplace")
    return _escaped(raw) if isinstance(raw, str) and raw else None


def _blank_value(value: Any) -> bool:
    return value is None or value == "" or value == b""


def _resolved_uri(uri: str, base: str) -> str:
    """``uri`` as written when it has a scheme or is absolute; else relative to ``base``
    (lexically: symlinks are the media stage's to resolve and confine, and a link loop there
    is one item's error, not the manifest's)."""
    is_uri = "://" in uri or storage.scheme_of(uri) != "file" or uri[:5].lower() == "file:"
    if is_uri or Path(uri).is_absolute():
        return uri
    return os.path.normpath(os.path.join(base, uri)) if storage.is_local(base) else f"{base}/{uri}"


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
