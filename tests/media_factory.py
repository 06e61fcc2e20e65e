"""Build real media for tests with ffmpeg (and espeak-ng for known speech)."""

from __future__ import annotations

import random
import shutil
import subprocess
from glob import glob
from pathlib import Path

import pytest


def ffmpeg() -> str:
    """The system ffmpeg when present (drawtext + fonts), else imageio-ffmpeg's static one."""
    if system := shutil.which("ffmpeg"):
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg(), "-y", "-v", "error", *args], check=True, capture_output=True)


def synth_video(
    path: Path,
    seconds: float = 3,
    size: str = "320x240",
    audio: bool = True,
    faststart: bool = False,
    codec: str = "libx264",
) -> Path:
    """testsrc2 video (+ a sine tone) encoded with ``codec``."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100"]
    args += ["-t", str(seconds), "-c:v", codec, "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac"] if audio else []
    args += ["-movflags", "+faststart"] if faststart else []
    run_ffmpeg(*args, str(path))
    return path


def require_speech_tools() -> tuple[str, str]:
    """espeak-ng and a TrueType font for drawtext; skip with the reason if absent."""
    espeak = shutil.which("espeak-ng")
    fonts = sorted(glob("/usr/share/fonts/**/DejaVuSans-Bold.ttf", recursive=True))
    if not espeak or not fonts or not shutil.which("ffmpeg"):
        pytest.skip("needs Debian ffmpeg, espeak-ng and fonts-dejavu-core (.ci/run installs them)")
    return espeak, fonts[0]


def speech_clip(path: Path, speech: str, on_screen: str) -> Path:
    """A clip whose transcript (espeak-ng) and on-screen text (drawtext) are known."""
    espeak, font = require_speech_tools()
    wav = path.with_suffix(".wav")
    subprocess.run([espeak, "-s", "140", "-w", str(wav), speech], check=True, capture_output=True)
    text = on_screen.replace(":", r"\:").replace("'", "")
    draw = (
        f"drawtext=fontfile={font}:text='{text}':fontsize=44:fontcolor=white:"
        "box=1:boxcolor=black@0.6:boxborderw=12:x=(w-tw)/2:y=(h-th)/2"
    )
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=0x205080:s=640x360:r=25",
        "-i",
        str(wav),
        "-vf",
        draw,
        "-shortest",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(path),
    )
    return path


def corrupt_audio_clip(path: Path) -> Path:
    """H.264 video muxed with an AC3 track whose frame payloads are scrambled."""
    tone, video = path.with_name("tone.ac3"), path.with_name("video_for_ac3.mp4")
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "4",
        "-c:a",
        "ac3",
        "-b:a",
        "96k",
        str(tone),
    )
    data = bytearray(tone.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0x0B and data[i + 1] == 0x77]
    rng = random.Random(1)
    for start in starts:  # keep sync words and headers so the demuxer still finds frames
        for i in range(start + 8, min(start + 384, len(data))):
            if rng.random() < 0.3:
                data[i] = rng.randrange(256)
    tone.write_bytes(bytes(data))
    synth_video(video, seconds=4, audio=False)
    run_ffmpeg(
        "-i",
        str(video),
        "-f",
        "ac3",
        "-i",
        str(tone),
        "-c",
        "copy",
        "-map",
        "0:v",
        "-map",
        "1:a",
        str(path),
    )
    return path


def lavfi_clip(path: Path, sources: list[str], seconds: float = 2, size: str = "320x240") -> Path:
    """A silent clip of ffmpeg test sources (testsrc, mandelbrot, smptebars, ...) played one
    after another, ``seconds`` each: one shot per source."""
    args: list[str] = []
    for source in sources:
        args += ["-f", "lavfi", "-t", str(seconds), "-i", f"{source}=size={size}:rate=10"]
    joined = "".join(f"[{i}:v]" for i in range(len(sources)))
    args += ["-filter_complex", f"{joined}concat=n={len(sources)}:v=1[v]", "-map", "[v]"]
    run_ffmpeg(*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path
