"""The project's exceptions and the documented per-item error codes.

Every exception the project raises is an ``EnrichError`` (tests/test_error_hierarchy.py checks
it). Its class says what the CLI and the ``runs`` row make of it, as delta-rs's ``DeltaError``
subclasses do: ``exit_code`` (2 for bad usage, before anything is written; 1 for a failure of
the data, the storage or the run) and ``run_status`` (the ``runs.status`` a run that raised it
ends with). Builtin bases (``OSError``, ``ValueError``, ...) stay as second bases, so callers
that catch those keep working.

Every ``errors`` table row carries one of ``ERROR_CODES``, and every one is produced by some
path (tests/test_error_codes.py checks both, and the docs page reference/error-codes.md)."""

import signal
from enum import StrEnum
from typing import ClassVar


class EnrichError(Exception):
    """The root of the project's exceptions: a failure of the data, the storage or the run
    (exit 1, the run ends ``failed``) unless a subclass says otherwise."""

    exit_code: ClassVar[int] = 1
    run_status: ClassVar[str] = "failed"  # a schemas.tables.RunStatus value (core imports none)


class UsageError(EnrichError):
    """A bad argument, config or input given by the user: the CLI exits 2 with this one-line
    message, no traceback. Data and storage failures are never UsageErrors (they exit 1)."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command: exit ``128 + signal`` (130, 143), and a run ends
    ``interrupted`` with its staging kept for ``--resume``. Not an ``EnrichError`` on purpose:
    like ``KeyboardInterrupt`` it is a ``BaseException``, so no ``except Exception`` (an item's
    retry, a best-effort report) can swallow a request to stop."""

    run_status: ClassVar[str] = "interrupted"

    def __init__(self, signum: int = signal.SIGINT, run_id: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.run_id = int(signum), run_id
        self.exit_code = 128 + self.signum


def exit_code_of(exc: BaseException) -> int:
    """The CLI's exit code for ``exc``: its class's; 130 for a bare ``KeyboardInterrupt``
    (SIGINT); 1 for what is not ours (a bug, a library's error)."""
    if isinstance(exc, KeyboardInterrupt):
        return getattr(exc, "exit_code", 128 + signal.SIGINT)
    return exc.exit_code if isinstance(exc, EnrichError) else EnrichError.exit_code


def run_status_of(exc: BaseException) -> str:
    """The ``runs.status`` of a run that ``exc`` ended: its class's, ``interrupted`` for a
    signal (``Interrupted``, ``KeyboardInterrupt``), else ``failed``."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted.run_status
    return exc.run_status if isinstance(exc, EnrichError) else EnrichError.run_status


ECHO_CHARS = 200  # an echoed user value is cut to this many characters


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with a note of its length:
    a 50 MB value must not become 50 MB of stderr (repr also escapes control characters)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters in all)"


ERROR_CODES: dict[str, str] = {
    "bad_row": "the manifest row cannot be read as a row: not JSON or not UTF-8, a key given "
    "twice, no item_id, no uri and nothing to describe, or the wrong number of CSV cells",
    "bad_field": "a manifest field cannot be read as written: the wrong type (tags: 5), NaN, "
    "a string that is not UTF-8 or not valid Unicode, a NUL in a uri, an id with leading or "
    "trailing whitespace",
    "not_found": "the input path or URI does not exist",
    "empty_file": "the file is zero bytes",
    "not_a_video": "the file could not be opened as a video container",
    "unsupported_codec": "the container opened but its video stream cannot be decoded",
    "truncated": "decoding stopped early; the file is damaged or cut short",
    "no_frames": "the video stream has no decodable frames",
    "audio_decode_failed": "an audio track exists but ffmpeg could not decode it",
    "too_large": "the file is over media.max_file_mb",
    "too_long": "the video or audio file is over media.max_duration_s",
    "frame_too_large": "the video's frames are over media.max_pixels (width x height), or "
    "have no size the probe could read within it; refused before decoding",
    "path_not_allowed": "the input resolves outside media.allowed_roots (local paths or URI "
    "prefixes), is a file: URI with a relative path, or has other hard links "
    "(media.allow_hardlinks)",
    "scheme_not_allowed": "the input URI's scheme is not in media.allowed_schemes",
    "scheme_not_supported": "the input URI's scheme is allowed but no filesystem here reads it "
    "(install its fsspec package)",
    "read_failed": "the input exists but could not be read from its storage",
    "not_a_file": "the input path is a directory or another non-regular file",
    "missing_input": "an item an earlier run enriched from a media-folder input is no longer "
    "in that folder (stage input; not counted in the run's items): its features stay served "
    "unless run.on_missing_input=delete, and the row is removed when the file comes back",
    "ocr_failed": "on-screen text recognition raised on this item",
    "asr_failed": "speech recognition raised on this item",
    "audio_failed": "audio event detection (speech, singing, music) or loudness raised on "
    "this item",
    "describe_failed": "the describer produced no usable description; for openai, the message "
    "says what was wrong with the endpoint's answer: not JSON or not UTF-8, not a chat "
    "completion (a usage count out of range, an object as the model), no text, longer than "
    "describe.max_new_tokens can produce, or a body past its byte cap; not retried",
    "describe_input_refused": "the describer endpoint refused the request's media or its "
    "media_io_kwargs (HTTP 400); the message quotes the server's reason and the fix: "
    "--trust-request-mm-kwargs or describe.video_timing=server for refused media_io_kwargs, a "
    "model that takes the modality or describe.video_input=frames / audio_input=transcript, or "
    "a higher --limit-mm-per-prompt or describe.max_images for too many parts",
    "describe_timeout": "the describer endpoint did not send its whole answer (connect, send, "
    "first byte and body) within describe.timeout_s, on every try",
    "describer_unavailable": "the describer endpoint kept answering 429 or 5xx, after all retries",
    "out_of_memory": "the describer ran out of accelerator memory even at batch size 1",
    "encode_failed": "the sentence encoder failed on this item",
    "stage_timeout": "the item was still in its stage after run.stage_timeout_s; abandoned",
    "unstorable_value": "a stage gave the item a value that does not fit its table column (a "
    "number out of the column's range, the wrong type, text that is not Unicode); the message "
    "names the column, and the item is this error row instead of a row no write can take",
    "internal_error": "an unexpected exception, after run.item_retries retries; the message "
    "has the type and text",
}

ErrorCode = StrEnum("ErrorCode", {code.upper(): code for code in ERROR_CODES})


def checked_code(code: str) -> str:
    """``code`` if it is documented; a typo in a producer fails loudly instead of writing an
    undocumented code into the errors table."""
    try:
        return ErrorCode(code).value
    except ValueError:
        raise ValueError(
            f"unknown error code '{code}': add it to core/errors.py (and the README)"
        ) from None


# Codes decided by the input itself: the same file fails the same way on every run. A rerun
# that meets such an item again does not count it as a new failure (``run.max_error_rate``);
# every other code (an endpoint down, a timeout, a crash) always counts.
INPUT_ERROR_CODES = frozenset(
    {
        "bad_row",
        "bad_field",
        "not_found",
        "empty_file",
        "not_a_video",
        "unsupported_codec",
        "truncated",
        "no_frames",
        "audio_decode_failed",
        "too_large",
        "too_long",
        "frame_too_large",
        "path_not_allowed",
        "scheme_not_allowed",
        "scheme_not_supported",
        "not_a_file",
        "missing_input",  # the folder's listing decides it, the same on every run
    }
)


# Two limits on one rate, on purpose. The run's gate is a tripwire for a broken dependency (the
# describer endpoint down, a model that fails every item): it must not fail a run over a corpus
# that holds some bad files, so it is lenient. ``enrich validate`` gates a release: a release
# serves what it holds, so it asks for nine items in ten.
RUN_MAX_ERROR_RATE = 0.5  # run.max_error_rate
VALIDATE_MAX_ERROR_RATE = 0.1  # enrich validate --max-error-rate


def error_rate(succeeded: int, failed: int, known_failures: int = 0) -> float:
    """The share of processed items that failed: ``failed / (succeeded + failed)``, 0.0 when
    nothing was processed (unchanged items are skipped, not processed).

    The rule about known failures: ``known_failures`` are items among ``failed`` whose error
    repeats the lake's row for the item with an input-decided code (``INPUT_ERROR_CODES``) on
    the same content (``schemas.rows.ERROR_IDENTITY``); every other code (an endpoint down, a
    timeout, a crash) always counts. They are taken out of both counts, because a rerun that
    meets a known bad file again learns nothing new. The
    run's gate passes them (``RunSummary.known_failures``); ``enrich validate`` passes none,
    because a release lacks a known bad file as much as a new one (and the ``runs`` row does
    not keep the count). The limits: ``RUN_MAX_ERROR_RATE`` and ``VALIDATE_MAX_ERROR_RATE``."""
    new_failures = failed - known_failures
    processed = succeeded + new_failures
    return new_failures / processed if processed else 0.0
