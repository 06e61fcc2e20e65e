"""Media: confine the path, probe the file, sample frames with decord, extract 16 kHz mono audio.

Every item's memory is bounded before anything is decoded: the probe reads libav's own stream
fields (no text parsing), a frame over ``media.max_pixels`` or a file over
``media.max_duration_s`` is refused, ``get_batch`` reads only the chosen indices, large frames
are scaled inside the decoder, and audio is decoded only up to ``media.max_audio_s``. Every
failure maps to a documented error code (``core.errors``); a file with no audio track is
not an error (``has_audio=False``).
An item without a uri (a manifest's text-only item) reads no file: it gets no frames and no
audio (``media_kind="text"``), and its content hash is the hash of its metadata.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow.fs as pafs
from PIL import Image

from core import storage
from core.config import MediaConfig
from transforms.manifest import TEXT_ONLY, metadata_sha256
from transforms.stage import Record, Stage, StageError

logger = logging.getLogger(__name__)

SHOT_PROBE_FACTOR = 4  # sampling=shots decodes this many candidates per kept frame
FETCHED_FIELDS = ("content_sha256", "local_path")  # fetch_input adds these before the stages
MEDIA_COLUMNS = ("frames", "audio")  # heavy, in-memory only; never written to a table
AUDIO_TIMEOUT_S = 600
TEXT_CODECS = {"ansi", "bintext", "xbin", "idf", "tty"}  # ffmpeg "plays" text files as video
READ_FAILURE_MARKERS = ("av_read_frame", "partial file", "Invalid data found")


def has_media(record: Record) -> bool:
    """Whether the item names a media file (a text-only item has no uri)."""
    return bool(record.get("uri"))


# -- where the input is ----------------------------------------------------------------------
def confine(uri: str, config: MediaConfig) -> str:
    """``uri`` in canonical form (an absolute local path or an object-store URI) when its
    scheme is allowed and it lies under an allowed root (a folder or a URI prefix); else raise."""
    scheme = storage.scheme_of(uri)
    if scheme not in config.allowed_schemes:
        raise StageError(
            "scheme_not_allowed", f"URI scheme '{scheme}' is not in media.allowed_schemes"
        )
    if _is_relative_file_uri(uri):  # it would resolve against whatever the working folder is
        raise StageError(
            "path_not_allowed",
            f"{uri}: a file: URI needs an absolute path (file:///path); a plain relative path "
            "is read relative to the manifest's folder",
        )
    try:
        target = storage.normalize(uri)
    except storage.StorageError as exc:
        raise StageError("path_not_allowed", str(exc)) from None
    roots = [storage.normalize(root) for root in config.allowed_roots]
    if roots and not any(_is_under(target, root) for root in roots):
        shown = uri if target == uri else f"{uri} (resolves to {target})"
        raise StageError("path_not_allowed", f"{shown} is outside media.allowed_roots")
    if roots and not config.allow_hardlinks and _has_other_links(target):
        raise StageError(
            "path_not_allowed",
            f"{uri} has other hard links, which may lie outside media.allowed_roots "
            "(set media.allow_hardlinks=true to read hard-linked files)",
        )
    return target


def _is_under(target: str, root: str) -> bool:
    """Whether ``target`` is ``root`` or inside it (``/`` holds every absolute path)."""
    return target == root or target.startswith(root.rstrip("/") + "/")


def _is_relative_file_uri(uri: str) -> bool:
    return uri[:5].lower() == "file:" and not unquote(urlparse(uri).path).startswith("/")


def _has_other_links(target: str) -> bool:
    """A local regular file with more than one name: its other names cannot be found without
    a scan of the whole filesystem, so confinement cannot vouch for them."""
    if not storage.is_local(target):
        return False
    try:
        found = os.stat(target)
    except OSError:
        return False  # check_file reports a missing or unreadable file with its own code
    return stat.S_ISREG(found.st_mode) and found.st_nlink > 1


def check_file(uri: str, config: MediaConfig) -> int:
    """Fail fast on missing, non-regular, empty or oversized files; return the size in bytes."""
    try:
        found = storage.info(uri)
    except storage.StorageError as exc:
        raise StageError("scheme_not_supported", str(exc)) from None
    except OSError as exc:
        raise StageError("read_failed", f"cannot stat {uri}: {exc}") from None
    if found.type == pafs.FileType.NotFound:
        raise StageError("not_found", f"no such file: {uri}")
    if found.type != pafs.FileType.File:
        raise StageError("not_a_file", f"not a regular file: {uri}")
    size = found.size
    if size == 0:
        raise StageError("empty_file", f"file is zero bytes: {uri}")
    if size > config.max_file_mb * (1 << 20):
        raise StageError(
            "too_large", f"{size / (1 << 20):.1f} MB > media.max_file_mb={config.max_file_mb}"
        )
    return size


def fetch_input(record: Record, config: MediaConfig, cache_dir: str | None = None) -> None:
    """Read the item's bytes once on the worker: ``content_sha256`` is computed while reading,
    and a remote object lands in a local temporary file (``local_path``) for the decoders. An
    input that is refused or unreadable gets None for both; the media stage says why. An item
    without media reads nothing: its ``content_sha256`` is the hash of its metadata."""
    record["content_sha256"] = record["local_path"] = None
    if not has_media(record):
        record["content_sha256"] = metadata_sha256(record)
        return
    try:
        uri = confine(record["uri"], config)
        check_file(uri, config)
        copy = storage.local_copy(uri, cache_dir)
    except (StageError, OSError):
        return
    record["content_sha256"], record["local_path"] = copy.sha256, str(copy.path)
    record["local_is_copy"] = copy.temporary


def release_input(record: Record) -> None:
    """Delete the item's temporary local copy, if it has one."""
    if record.pop("local_is_copy", False) and record.get("local_path"):
        Path(record["local_path"]).unlink(missing_ok=True)
    record.pop("local_path", None)


# -- what the file holds ---------------------------------------------------------------------
@dataclass
class Probe:
    """Container facts, read without decoding more than the probe's bounded frame or two."""

    container: str | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    decodable: bool = True  # a decoder exists for the video stream

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def probe_file(path: Path, max_pixels: int | None = None) -> Probe:
    """Read the container's streams with libav (PyAV): its own typed fields, which no field
    width in a header can fool. libav decodes a frame or two to learn a stream's format; that
    decoding is bounded by ``max_pixels`` (default: ``media.max_pixels``'s), so a frame over it
    is never decoded, here or later (its size then reads as unknown: ``check_frame_size``)."""
    import av

    limit = max_pixels or MediaConfig.model_fields["max_pixels"].default
    try:
        with av.open(str(path), options={"max_pixels": str(limit), "threads": "1"}) as container:
            probe = _probe_of(container)
    except av.FFmpegError as exc:
        if _looks_like_mp4(path):
            raise StageError(
                "truncated", "an MP4 whose index (moov) cannot be read: cut short or damaged"
            ) from None
        raise StageError("not_a_video", f"no video or audio stream: {_short(exc)}") from None
    if not probe.has_video and not probe.has_audio:
        raise StageError("not_a_video", "no video or audio stream")
    return probe


def _probe_of(container) -> Probe:
    """The first video stream (not cover art, not a text file "played" as video) and the
    first audio stream of an open PyAV container."""
    import av

    probe = Probe(container=container.format.name, duration_s=_seconds(container.duration, 1e-6))
    for stream in container.streams:
        codec = _codec_name(stream)
        if stream.type == "video" and probe.video_codec is None and codec not in TEXT_CODECS:
            if stream.disposition & av.stream.Disposition.attached_pic:
                continue
            context = stream.codec_context
            probe.video_codec = codec
            probe.decodable = context is not None
            probe.width = (context.width or None) if context else None
            probe.height = (context.height or None) if context else None
            rate = stream.average_rate or stream.guessed_rate
            probe.fps = round(float(rate), 3) if rate and 0 < float(rate) < 1000 else None
        elif stream.type == "audio" and probe.audio_codec is None:
            probe.audio_codec = codec
    return probe


def _codec_name(stream) -> str:
    """libav's short codec name (``h264``, ``aac``), not its decoder's (``mp3float``)."""
    context = stream.codec_context
    return context.codec.canonical_name if context is not None else "unknown"


def _seconds(value: int | None, unit: float) -> float | None:
    """A container time in seconds; None when absent, negative or absurd (no clip lasts a
    century: such a value is a corrupt or hostile header, not a duration)."""
    if value is None:
        return None
    seconds = value * unit
    return round(seconds, 3) if math.isfinite(seconds) and 0 <= seconds < 3.2e9 else None


def check_frame_size(probe: Probe, config: MediaConfig) -> None:
    """Refuse, before any decoding, a video whose decoded frames would exceed
    ``media.max_pixels``, or whose frame size is unknown (the probe's decoder then refused a
    frame over the limit, so nothing bounds what decoding it would cost)."""
    if not probe.decodable:
        raise StageError("unsupported_codec", f"no decoder here reads {probe.video_codec} video")
    if not probe.width or not probe.height:
        raise StageError(
            "frame_too_large",
            f"the {probe.video_codec} frames have no size the probe could read within "
            f"media.max_pixels={config.max_pixels} (a larger frame is never decoded)",
        )
    if probe.width * probe.height > config.max_pixels:
        raise StageError(
            "frame_too_large",
            f"{probe.width}x{probe.height} frames > media.max_pixels={config.max_pixels}",
        )


def check_duration(duration_s: float | None, config: MediaConfig) -> None:
    """Refuse a video or audio file over ``media.max_duration_s`` (unknown passes: decoding
    is bounded anyway, by the sampled frames and ``media.max_audio_s``)."""
    if duration_s is not None and duration_s > config.max_duration_s:
        raise StageError(
            "too_long", f"{duration_s:.0f}s > media.max_duration_s={config.max_duration_s}"
        )


def _looks_like_mp4(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


# -- frames ----------------------------------------------------------------------------------
def uniform_indices(frame_count: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly, each at the centre of its segment."""
    if frame_count <= num_frames:
        return list(range(frame_count))
    step = frame_count / num_frames
    return [min(frame_count - 1, int(step * i + step / 2)) for i in range(num_frames)]


def _spread(values: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``values``, picked evenly."""
    return [values[i] for i in uniform_indices(len(values), limit)]


def sample_indices(config: MediaConfig, frame_count: int, fps: float, keyframes=None) -> list[int]:
    """Frame indices for ``media.sampling`` (always ≤ ``media.num_frames``)."""
    if config.sampling == "fps" and fps > 0:
        step = fps / config.fps
        return _spread(
            [
                int(i * step)
                for i in range(int(frame_count / step) + 1)
                if int(i * step) < frame_count
            ],
            config.num_frames,
        )
    if config.sampling == "keyframes" and keyframes is not None:
        keys = sorted(int(k) for k in keyframes())
        if keys:
            return _spread(keys, config.num_frames)
    return uniform_indices(frame_count, config.num_frames)


def shot_starts(frames: list[np.ndarray], threshold: float) -> list[int]:
    """Indices of frames that open a shot: colour-histogram distance to the previous frame
    (half the L1 distance of normalized 8×8×8 RGB histograms, 0-1) above ``threshold``."""
    if not frames:
        return []
    hists = [colour_histogram(f) for f in frames]
    cuts = [
        i for i in range(1, len(hists)) if 0.5 * np.abs(hists[i] - hists[i - 1]).sum() > threshold
    ]
    return [0, *cuts]


def colour_histogram(frame: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalized ``bins``³ RGB histogram of a frame."""
    quantized = (frame[..., :3].reshape(-1, 3).astype(np.int32) * bins) // 256
    flat = quantized[:, 0] * bins * bins + quantized[:, 1] * bins + quantized[:, 2]
    counts = np.bincount(flat, minlength=bins**3).astype(np.float32)
    return counts / max(counts.sum(), 1.0)


def shot_covering_picks(starts: list[int], candidates: int, limit: int) -> list[int]:
    """At most ``limit`` of ``candidates`` positions: the middle of every shot first (the
    longest shots when there are more shots than ``limit``), then evenly spread ones."""
    bounds = [*starts, candidates]
    shots = sorted(zip(bounds[:-1], bounds[1:], strict=True), key=lambda s: s[0] - s[1])
    picks = {(begin + end - 1) // 2 for begin, end in shots[:limit]}
    for pool in (uniform_indices(candidates, limit), range(candidates)):
        fill = [i for i in pool if i not in picks]
        picks.update(fill[: max(0, limit - len(picks))])
    return sorted(picks)


def resize_max_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longest side is at most ``max_side``, keeping the aspect ratio."""
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def _decode_size(probe: Probe, max_side: int) -> tuple[int, int]:
    """(width, height) for decord to scale to while decoding; (-1, -1) keeps the size (the
    probe's size is known here: ``check_frame_size`` refuses a video without one)."""
    if max(probe.width, probe.height) <= max_side:
        return -1, -1
    scale = max_side / max(probe.width, probe.height)
    return max(2, round(probe.width * scale / 2) * 2), max(2, round(probe.height * scale / 2) * 2)


def read_frames(path: Path, probe: Probe, config: MediaConfig) -> dict:
    """Decode only the sampled frames, with their timestamps; a frame over
    ``media.max_pixels`` or a video over ``media.max_duration_s`` is refused first."""
    import decord

    check_frame_size(probe, config)
    check_duration(probe.duration_s, config)
    width, height = _decode_size(probe, config.max_side)
    try:
        reader = decord.VideoReader(
            str(path),
            ctx=decord.cpu(0),
            width=width,
            height=height,
            num_threads=config.decode_threads,
        )
    except (decord.DECORDError, RuntimeError) as exc:
        if any(marker in str(exc) for marker in READ_FAILURE_MARKERS):
            raise StageError("truncated", f"the stream breaks off: {_short(exc)}") from None
        raise StageError(
            "unsupported_codec", f"{probe.video_codec} stream cannot be decoded: {_short(exc)}"
        ) from None
    frame_count = len(reader)
    if frame_count == 0:
        raise StageError("no_frames", "the video stream has no frames")
    fps = float(reader.get_avg_fps() or probe.fps or 0.0)
    duration = probe.duration_s or (frame_count / fps if fps > 0 else 0.0)
    check_duration(duration, config)
    if config.sampling == "shots":
        indices = uniform_indices(frame_count, config.num_frames * SHOT_PROBE_FACTOR)
    else:
        indices = sample_indices(config, frame_count, fps, reader.get_key_indices)
    try:
        batch = reader.get_batch(indices).asnumpy()
        timestamps = reader.get_frame_timestamp(indices)[:, 0]
    except (decord.DECORDError, RuntimeError) as exc:
        raise StageError("truncated", f"decoding stopped early: {_short(exc)}") from None
    if config.sampling == "shots":
        small = [resize_max_side(f, 64) for f in batch]
        picks = shot_covering_picks(
            shot_starts(small, config.shot_threshold), len(batch), config.num_frames
        )
        batch, timestamps = batch[picks], timestamps[picks]
        indices = [indices[i] for i in picks]
    return {
        "frames": [resize_max_side(f, config.max_side) for f in batch],
        "frame_timestamps_s": checked_timestamps(timestamps, indices, fps, duration),
        "frame_count": frame_count,
        "fps": round(fps, 3),
        "duration_s": round(duration, 3),
        "width": probe.width or int(batch.shape[2]),
        "height": probe.height or int(batch.shape[1]),
    }


def checked_timestamps(
    raw: np.ndarray, indices: list[int], fps: float, duration: float
) -> list[float]:
    """Each frame's time in seconds, kept within [0, duration]: a time the decoder could not
    know (a frame without a pts reads as 9.2e15 s in a one-frame MKV) becomes index / fps."""
    limit = duration if duration > 0 else math.inf
    times = []
    for time, index in zip(raw.tolist(), indices, strict=True):
        if not (math.isfinite(time) and 0 <= time <= limit + 1):
            time = index / fps if fps > 0 else 0.0
        times.append(round(min(time, limit), 3))
    return times


# -- audio -----------------------------------------------------------------------------------
def read_audio(path: Path, probe: Probe, config: MediaConfig) -> np.ndarray | None:
    """16 kHz mono float32 audio of the first ``media.max_audio_s`` seconds; None when the
    file has no audio track."""
    return read_audio_ffmpeg(path, config) if probe.has_audio else None


def read_audio_ffmpeg(path: Path, config: MediaConfig) -> np.ndarray:
    """The first audio track through an ffmpeg binary, which stops decoding at
    ``media.max_audio_s`` (a 10-hour file costs what its first minutes cost) and skips
    damaged packets instead of stopping (decord and PyAV give up on some damaged AC3)."""
    command = [
        ffmpeg_binary(),
        "-nostdin",
        "-v",
        "error",
        "-err_detect",
        "ignore_err",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(config.sample_rate),
        "-t",
        str(config.max_audio_s),
        "-f",
        "f32le",
        "pipe:1",
    ]
    try:
        result = subprocess.run(command, capture_output=True, timeout=AUDIO_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise StageError("audio_decode_failed", f"over {AUDIO_TIMEOUT_S}s to decode") from None
    samples = np.frombuffer(result.stdout, dtype=np.float32)
    if samples.size == 0 or not np.isfinite(samples).all():
        message = result.stderr.decode(errors="replace").strip()[-300:] or "no samples"
        raise StageError("audio_decode_failed", f"ffmpeg could not decode the audio: {message}")
    return samples.copy()  # writable, and the pipe's bytes are freed


def ffmpeg_binary() -> str:
    """imageio-ffmpeg's static binary (a pip dependency), else ffmpeg on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return "ffmpeg"


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


# Named colour buckets by hue (degrees): used to tell the describer the dominant colours.
_HUE_NAMES = (
    (15, "red"),
    (45, "orange"),
    (70, "yellow"),
    (160, "green"),
    (200, "cyan"),
    (255, "blue"),
    (290, "purple"),
    (335, "pink"),
    (360, "red"),
)


def _colour_names(rgb: np.ndarray) -> np.ndarray:
    """Name each pixel of an (N, 3) float RGB array in [0, 1]."""
    maxc, minc = rgb.max(axis=1), rgb.min(axis=1)
    sat = np.where(maxc > 0, (maxc - minc) / np.maximum(maxc, 1e-6), 0)
    r, g, b = rgb.T
    delta = np.maximum(maxc - minc, 1e-6)
    hue = (
        np.select(
            [maxc == r, maxc == g],
            [((g - b) / delta) % 6, (b - r) / delta + 2],
            (r - g) / delta + 4,
        )
        * 60
    )
    names = np.empty(len(rgb), dtype=object)
    for upper, label in reversed(_HUE_NAMES):
        names[hue < upper] = label
    names[(sat < 0.2) & (maxc >= 0.75)] = "white"
    names[(sat < 0.2) & (maxc < 0.75)] = "grey"
    names[(sat >= 0.2) & (maxc < 0.5) & np.isin(names, ["orange", "red", "yellow"])] = "brown"
    names[maxc < 0.15] = "black"
    return names


def frame_statistics(frames: list[np.ndarray]) -> dict:
    """Cheap visual facts for the describer: brightness, contrast, colour, motion."""
    small = [resize_max_side(f, 64).astype(np.float32) / 255.0 for f in frames]
    luma = [0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2] for f in small]
    motion = [
        float(np.mean(np.abs(a - b)))
        for a, b in zip(luma[:-1], luma[1:], strict=True)
        if a.shape == b.shape
    ]
    pixels = np.concatenate([f.reshape(-1, 3) for f in small])
    names, counts = np.unique(_colour_names(pixels), return_counts=True)
    order = np.argsort(-counts)
    rg = pixels[:, 0] - pixels[:, 1]
    yb = 0.5 * (pixels[:, 0] + pixels[:, 1]) - pixels[:, 2]
    return {
        "brightness": round(float(np.mean([lum.mean() for lum in luma])), 3),
        "contrast": round(float(np.mean([lum.std() for lum in luma])), 3),
        "colourfulness": round(
            float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())), 3
        ),
        "motion": round(float(np.mean(motion)) if motion else 0.0, 4),
        "dominant_colours": [str(names[i]) for i in order[:3] if counts[i] / len(pixels) >= 0.08],
    }


def no_frames() -> Record:
    """The picture fields of an item with no video stream."""
    return {
        "frames": [],
        "frame_timestamps_s": [],
        "frame_count": 0,
        "fps": None,
        "width": None,
        "height": None,
        "frames_sampled": 0,
        "frame_stats": {},
    }


def no_media() -> Record:
    """The media fields of an item with no file at all: no picture, no sound, no codecs."""
    return {
        **no_frames(),
        "video_codec": None,
        "audio_codec": None,
        "duration_s": None,
        "audio": None,
        "has_audio": False,
        "audio_rms": 0.0,
        "audio_error": None,
    }


class MediaStage(Stage):
    """Confine + probe + frames + audio + frame statistics for each record."""

    name = "media"
    holds_gil = True  # frame sampling, resizing and statistics are Python and numpy work
    needs = frozenset({"item_id", "uri"})
    adds = frozenset(
        {
            "file_size",
            "local_path",
            "video_codec",
            "audio_codec",
            "media_kind",
            "frames",
            "frame_timestamps_s",
            "frame_count",
            "fps",
            "width",
            "height",
            "duration_s",
            "audio",
            "has_audio",
            "audio_rms",
            "audio_error",
            "frames_sampled",
            "frame_stats",
        }
    )

    def __init__(self, config: MediaConfig):
        super().__init__(config, batch_size=config.batch_size)

    def process_item(self, record: Record) -> None:
        if not has_media(record):
            record.update(no_media(), file_size=None, local_path=None, media_kind=TEXT_ONLY)
            return
        uri = confine(record["uri"], self.config)
        record["file_size"] = check_file(uri, self.config)
        if not record.get("local_path") and storage.is_local(uri):
            record["local_path"] = uri
        elif not record.get("local_path"):
            fetch_input(record, self.config)
            if not record["local_path"]:
                raise StageError("read_failed", f"could not read {uri}")
        self._decode(record, Path(record["local_path"]))

    def _decode(self, record: Record, path: Path) -> None:
        probe = probe_file(path, self.config.max_pixels)
        record.update(video_codec=probe.video_codec, audio_codec=probe.audio_codec)
        if probe.has_video:
            record.update(read_frames(path, probe, self.config), media_kind="video")
        else:
            check_duration(probe.duration_s, self.config)
            record.update(no_frames(), duration_s=probe.duration_s, media_kind="audio")
        audio = self.audio_or_skip(path, probe, record)
        record["audio"] = audio
        record["has_audio"] = audio is not None and audio.size > 0
        record["audio_rms"] = float(np.sqrt(np.mean(audio**2))) if record["has_audio"] else 0.0
        if record["duration_s"] is None and record["has_audio"]:
            record["duration_s"] = round(audio.size / self.config.sample_rate, 3)
        record["frames_sampled"] = len(record["frames"])
        record["frame_stats"] = frame_statistics(record["frames"]) if record["frames"] else {}

    def audio_or_skip(self, path: Path, probe: Probe, record: Record) -> np.ndarray | None:
        """The audio track (None without one). With ``on_audio_error: skip_audio`` an
        unreadable track of a video is skipped, and why goes to ``audio_error``."""
        record["audio_error"] = None
        try:
            return read_audio(path, probe, self.config)
        except StageError as exc:
            if self.config.on_audio_error == "error" or not probe.has_video:
                raise
            logger.warning("%s: going on without audio (%s)", record["item_id"], exc.message)
            record["audio_error"] = exc.message
            return None
