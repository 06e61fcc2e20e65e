"""One storage layer for every path: manifests, media, staging, the lake and reports.

A path is a URI (``s3://bucket/key``, ``gs://…``, ``abfs://…``, ``file:///…``) or a plain
local path. Everything goes through ``pyarrow.fs`` (fsspec filesystems such as adlfs or gcsfs
plug in through ``FSSpecHandler`` when pyarrow has no native one), so the same code runs on a
laptop and on workers that are other machines. Credentials and endpoints come from the
environment of each process (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, …), never from
config files, so a cluster passes them to executors the way it passes any secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import unicodedata
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from core.errors import EnrichError, UsageError, echo

READ_CHUNK_BYTES = 4 << 20
logger = logging.getLogger(__name__)


class StorageError(EnrichError, OSError):
    """A path that cannot be used at all (a bad scheme, a file:// URI naming another host)."""


class PathEscape(UsageError, ValueError):
    """A name from user input (a run id, a label) that would put a path outside its root:
    refused (exit 2) before anything is read, written or deleted there."""


def scheme_of(uri: str) -> str:
    """``file`` for local paths and ``file://`` URIs, else the URI scheme (lower case)."""
    parsed = urlparse(str(uri))
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else "file"


def is_local(uri: str) -> bool:
    return scheme_of(uri) == "file"


def local_path(uri: str) -> Path:
    """The absolute local path of a plain path or ``file://`` URI (percent-decoded)."""
    text = str(uri)
    if text[:5].lower() == "file:":
        parsed = urlparse(text)
        if parsed.netloc.lower() not in ("", "localhost"):
            raise StorageError(
                f"{text}: a file:// URI with a host ({parsed.netloc}) names another machine; "
                "use file:///path for a local file"
            )
        return Path(unquote(parsed.path)).resolve()
    return Path(text).expanduser().resolve()


def normalize(uri: str) -> str:
    """A canonical form: absolute local paths, and URIs without a trailing slash."""
    return str(local_path(uri)) if is_local(uri) else str(uri).rstrip("/")


def join(base: str, *parts: str) -> str:
    """``base/part/part`` for local paths and URIs alike."""
    return "/".join([normalize(base), *(p.strip("/") for p in parts)])


NAME_MAX_BYTES = 255  # the longest file name most file systems take
# Slash look-alikes that Unicode normalization (NFKC) leaves alone.
_SLASH_LOOKALIKES = "\u2044\u2215\u29f8\u29f9"
_ROOTED = re.compile(r"^(?:[/\\~]|[A-Za-z][A-Za-z0-9+.\-]*:)")  # /x, \\x, ~x, C:, s3:


def join_under(root: str, *parts: str) -> str:
    """``join(root, *parts)``, refused with ``PathEscape`` unless it stays under ``root``.
    Each part is one or more ``/``-separated names; refused: an absolute path, a URI or a
    drive, an empty name, ``.`` or ``..``, a backslash or control character, each of these
    percent-encoded or as a Unicode look-alike (``%2e%2e``, two U+FF0E), and a name over 255
    bytes. On a local disk the result, symlinks resolved, must also lie under the resolved
    root (a link inside the root that points out of it is refused); object stores have no
    links, and their keys no ``..`` once the names are checked."""
    names: list[str] = []
    for part in parts:
        text = str(part)
        if _ROOTED.match(text):
            raise _escape(root, text, "it is an absolute path, a URI or a drive")
        for name in text.split("/"):
            if problem := _name_problem(name):
                raise _escape(root, text, problem)
            names.append(name)
    joined = join(root, *names)
    if is_local(root):
        try:
            base, target = local_path(root), Path(joined).resolve()
        except (OSError, RuntimeError) as exc:  # a link loop, a name the disk refuses
            raise _escape(root, "/".join(names), f"it cannot be resolved ({exc})") from None
        if not target.is_relative_to(base):
            raise _escape(root, "/".join(names), f"it resolves to {target}, through a link")
    return joined


def _name_problem(name: str) -> str | None:
    """Why one path name may not be used under a root (None: it may)."""
    decoded = name
    for _ in range(3):  # %252e%252e is %2e%2e once decoded, and .. twice
        decoded = unquote(decoded)
    folded = unicodedata.normalize("NFKC", decoded)
    if not name:
        return "it has an empty name (a leading, trailing or doubled /)"
    if folded in (".", ".."):
        return "it names '.' or '..' (or an encoded or look-alike form of them)"
    if any(c in folded for c in "/\\" + _SLASH_LOOKALIKES):
        return "it holds a path separator (or an encoded or look-alike form of one)"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in decoded):
        return "it holds a control or format character"
    if folded != decoded:
        return "it holds characters that Unicode normalization changes (look-alikes)"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"a name of {len(name.encode('utf-8', 'surrogatepass'))} bytes is over 255"
    return None


def _escape(root: str, part: str, why: str) -> PathEscape:
    return PathEscape(f"{echo(part)} cannot be used as a path under {echo(root)}: {why}")


def parent(uri: str) -> str:
    text = normalize(uri)
    return text.rsplit("/", 1)[0] if "/" in text.split("://", 1)[-1] else text


def name_of(uri: str) -> str:
    return normalize(uri).rsplit("/", 1)[-1]


@lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    if scheme == "file":
        return pafs.LocalFileSystem()
    if scheme in ("s3", "s3a"):
        return pafs.S3FileSystem(**s3_options())
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        try:
            import fsspec

            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
        except (ImportError, ValueError) as inner:
            raise StorageError(
                f"no filesystem for '{scheme}://' ({exc}); install its fsspec package "
                "(gcsfs, adlfs, ...)"
            ) from inner


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for ``uri``."""
    scheme = scheme_of(uri)
    if scheme == "file":
        return _filesystem("file", ""), str(local_path(uri))
    parsed = urlparse(str(uri))
    return _filesystem(scheme, parsed.netloc), f"{parsed.netloc}{parsed.path}".rstrip("/")


def s3_options() -> dict:
    """pyarrow S3 settings from the standard AWS environment variables."""
    options: dict = {}
    if endpoint := os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or endpoint
        options["scheme"] = parsed.scheme or "https"
    if region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        options["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if token := os.environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = token
    return options


def delta_storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs ``storage_options`` for a lake URI: S3 endpoint, plain HTTP for local test
    servers, and ``conditional_put=etag`` so concurrent commits are safe without DynamoDB."""
    if scheme_of(uri) not in ("s3", "s3a"):
        return None
    keys = (
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ALLOW_HTTP",
    )
    options = {key: os.environ[key] for key in keys if os.environ.get(key)}
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    options.setdefault("conditional_put", os.environ.get("AWS_CONDITIONAL_PUT", "etag"))
    return options


def info(uri: str) -> pafs.FileInfo:
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str) -> bool:
    return info(uri).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    return info(uri).type == pafs.FileType.Directory


def read_bytes(uri: str) -> bytes:
    """A whole object in one read of known size (a sizeless stream read of a 90 MB S3 object
    takes ~100x longer)."""
    fs, path = resolve(uri)
    with fs.open_input_file(path) as handle:
        return handle.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object; atomic on object stores, and by rename on local disks."""
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        partial = f"{path}.{uuid.uuid4().hex[:8]}.partial"
        with fs.open_output_stream(partial) as stream:
            stream.write(data)
        fs.move(partial, path)
        return
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def open_output(uri: str):
    """A writable stream (parent folders created)."""
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    return fs.open_output_stream(path)


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """The files under a folder URI, as URIs of the same form, sorted."""
    fs, path = resolve(uri)
    if recursive and is_local(uri):
        return _local_files(path)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    found = [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    if is_local(uri):
        return sorted(found)
    scheme = scheme_of(uri)
    return sorted(f"{scheme}://{p}" for p in found)


def _local_files(root: str) -> list[str]:
    """The regular files under a local folder, each listed once. The folder's own tree comes
    first; a symlink to a directory is followed afterwards, unless that directory (by device
    and inode) was already listed, so link cycles (``sub/up -> ..``) end and no file shows up
    twice through an alias of its folder. Unreadable sub-folders are logged and skipped."""
    if not os.path.isdir(root):
        return []
    files: list[str] = []
    seen: set[tuple[int, int]] = set()
    tops = [root]
    while tops:
        for folder, dirs, names in os.walk(tops.pop(0), onerror=_log_walk_error):
            found = os.stat(folder)
            if (found.st_dev, found.st_ino) in seen:
                dirs.clear()
                continue
            seen.add((found.st_dev, found.st_ino))
            dirs.sort()
            tops += [
                os.path.join(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d))
            ]
            files += [path for n in names if os.path.isfile(path := os.path.join(folder, n))]
    return sorted(files)


def _log_walk_error(error: OSError) -> None:
    logger.warning("skipped %s while listing: %s", error.filename, error.strerror)


def list_dirs(uri: str) -> list[str]:
    """The sub-folders directly under a folder URI."""
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    found = [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.Directory]
    prefix = "" if is_local(uri) else f"{scheme_of(uri)}://"
    return sorted(prefix + p for p in found)


def delete_tree(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete_file(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


@dataclass
class LocalCopy:
    """A readable local file for ``uri`` and the sha256 of its bytes, computed while reading.

    Local files are read in place; remote objects are streamed into a private temporary file
    (one object at a time per worker, deleted by ``release``), so decoders that need a path
    (decord, ffmpeg) work on any storage.
    """

    path: Path
    sha256: str
    size: int
    temporary: bool

    def release(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def local_copy(uri: str, cache_dir: str | None = None) -> LocalCopy:
    """Hash ``uri`` while reading it; remote objects land in ``cache_dir`` (or the temp dir)."""
    digest = hashlib.sha256()
    if is_local(uri):
        path = local_path(uri)
        size = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(READ_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        return LocalCopy(path, digest.hexdigest(), size, temporary=False)
    fs, path = resolve(uri)
    suffix = Path(path).suffix
    handle, target = tempfile.mkstemp(prefix="enrich-media-", suffix=suffix, dir=cache_dir)
    size = 0
    try:
        with os.fdopen(handle, "wb") as out, fs.open_input_stream(path) as stream:
            while chunk := stream.read(READ_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        Path(target).unlink(missing_ok=True)
        raise
    return LocalCopy(Path(target), digest.hexdigest(), size, temporary=True)


def copy_tree(source: str, target: str) -> None:
    """Copy every file under ``source`` to the same relative path under ``target``."""
    base = normalize(source)
    for uri in list_files(source):
        write_bytes(join(target, uri[len(base) :]), read_bytes(uri))


__all__ = [
    "LocalCopy",
    "PathEscape",
    "StorageError",
    "copy_tree",
    "delete_file",
    "delete_tree",
    "delta_storage_options",
    "exists",
    "info",
    "is_dir",
    "is_local",
    "join",
    "join_under",
    "list_dirs",
    "list_files",
    "local_copy",
    "local_path",
    "name_of",
    "normalize",
    "open_output",
    "parent",
    "read_bytes",
    "resolve",
    "scheme_of",
    "write_bytes",
]
