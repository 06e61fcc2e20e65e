"""The documented per-item error codes. Every ``errors`` table row carries one of these, and
every one is produced by some path (tests/test_error_codes.py checks both, and the README).
Also ``UsageError``, the one channel for bad arguments and configs."""

from enum import StrEnum


class UsageError(Exception):
    """A bad argument, config or input given by the user: the CLI exits 2 with this one-line
    message, no traceback. Data and storage failures are never UsageErrors (they exit 1)."""


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
    "describe_failed": "the describer produced no usable description",
    "describe_input_refused": "the describer endpoint refused the request's video or audio "
    "input (HTTP 400 with video_url or audio parts): serve a model that takes it, raise vLLM's "
    "--limit-mm-per-prompt, or set describe.video_input=frames / audio_input=transcript",
    "describe_timeout": "the describer endpoint did not answer in time, after all retries",
    "describer_unavailable": "the describer endpoint kept answering 429 or 5xx, after all retries",
    "out_of_memory": "the describer ran out of accelerator memory even at batch size 1",
    "encode_failed": "the sentence encoder failed on this item",
    "stage_timeout": "the item was still in its stage after run.stage_timeout_s; abandoned",
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
