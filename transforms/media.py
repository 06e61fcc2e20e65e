"""Media: probe a clip, sample frames uniformly with decord, and extract 16 kHz mono audio.

Decoding never decodes a whole long video: ``get_batch`` reads only the chosen indices.
Every failure maps to a documented error code (``transforms.errors``).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from transforms.config import MediaConfig
from transforms.stage import Record, Stage, StageError

logger = logging.getLogger(__name__)

NO_AUDIO_MARKERS = ("Can't find audio stream", "cannot find audio stream")
MEDIA_COLUMNS = ("frames", "audio")  # heavy, in-memory only; never written to a table


def local_path(uri: str) -> Path:
    """Turn ``file://`` URIs and plain paths into a Path."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    raise StageError("not_found", f"URI scheme '{parsed.scheme}' is not readable here: {uri}")


def uniform_indices(frame_count: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spread evenly, each at the centre of its segment."""
    if frame_count <= num_frames:
        return list(range(frame_count))
    step = frame_count / num_frames
    return [min(frame_count - 1, int(step * i + step / 2)) for i in range(num_frames)]


def resize_max_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longest side is at most ``max_side``, keeping the aspect ratio."""
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def check_file(path: Path, config: MediaConfig) -> int:
    """Fail fast on missing, empty or oversized files; return the size in bytes."""
    if not path.exists():
        raise StageError("not_found", f"no such file: {path}")
    if not path.is_file():
        raise StageError("not_found", f"not a regular file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise StageError("empty_file", f"file is zero bytes: {path}")
    if size > config.max_file_mb * (1 << 20):
        raise StageError(
            "too_large", f"{size / (1 << 20):.0f} MB > media.max_file_mb={config.max_file_mb}"
        )
    return size


def read_frames(path: Path, config: MediaConfig) -> dict:
    """Probe the video and decode ``num_frames`` uniform frames with their timestamps."""
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as exc:
        raise StageError("not_a_video", f"cannot open as video: {_short(exc)}") from None
    frame_count = len(reader)
    if frame_count == 0:
        raise StageError("no_frames", "the video stream has no frames")
    fps = float(reader.get_avg_fps() or 0.0)
    duration = frame_count / fps if fps > 0 else 0.0
    if duration > config.max_duration_s:
        raise StageError(
            "too_long", f"{duration:.0f}s > media.max_duration_s={config.max_duration_s}"
        )
    indices = uniform_indices(frame_count, config.num_frames)
    try:
        batch = reader.get_batch(indices).asnumpy()
        timestamps = reader.get_frame_timestamp(indices)[:, 0]
    except decord.DECORDError as exc:
        raise StageError("truncated", f"decoding stopped early: {_short(exc)}") from None
    height, width = batch.shape[1:3]
    return {
        "frames": [resize_max_side(f, config.max_side) for f in batch],
        "frame_timestamps_s": [round(float(t), 3) for t in timestamps],
        "frame_count": frame_count,
        "fps": round(fps, 3),
        "duration_s": round(duration, 3),
        "width": int(width),
        "height": int(height),
    }


def read_audio(path: Path, config: MediaConfig) -> np.ndarray | None:
    """16 kHz mono float32 audio; None when the file has no audio track."""
    import decord

    try:
        reader = decord.AudioReader(
            str(path), ctx=decord.cpu(0), sample_rate=config.sample_rate, mono=True
        )
        samples = reader[:].asnumpy().reshape(-1)
    except decord.DECORDError as exc:
        if any(marker in str(exc) for marker in NO_AUDIO_MARKERS):
            return None
        logger.info("decord could not read audio of %s (%s); trying ffmpeg", path, _short(exc))
        samples = read_audio_ffmpeg(path, config)
    return samples[: int(config.max_audio_s * config.sample_rate)].astype(np.float32)


def read_audio_ffmpeg(path: Path, config: MediaConfig) -> np.ndarray:
    """Fallback decoder through an ffmpeg binary (imageio-ffmpeg's, else the system one)."""
    command = [
        ffmpeg_binary(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
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
    result = subprocess.run(command, capture_output=True, timeout=600, check=False)
    samples = np.frombuffer(result.stdout, dtype=np.float32)
    if samples.size == 0:
        message = result.stderr.decode(errors="replace").strip()[-300:] or "no samples"
        raise StageError("audio_decode_failed", f"decord and ffmpeg both failed: {message}")
    return samples


def ffmpeg_binary() -> str:
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


class MediaStage(Stage):
    """Probe + frames + audio + frame statistics for each record."""

    name = "media"

    def __init__(self, config: MediaConfig):
        super().__init__(config, batch_size=config.batch_size)

    def fingerprint_fields(self) -> dict:
        return {
            "num_frames": self.config.num_frames,
            "max_side": self.config.max_side,
            "sample_rate": self.config.sample_rate,
        }

    def process_item(self, record: Record) -> None:
        path = local_path(record["uri"])
        record["file_size"] = check_file(path, self.config)
        record.update(read_frames(path, self.config))
        audio = read_audio(path, self.config)
        record["audio"] = audio
        record["has_audio"] = audio is not None and audio.size > 0
        record["audio_rms"] = float(np.sqrt(np.mean(audio**2))) if record["has_audio"] else 0.0
        record["frames_sampled"] = len(record["frames"])
        record["frame_stats"] = frame_statistics(record["frames"])
