"""Benchmark: the same synthesized clips through the local, Beam and Spark engines.

Clips are short (2 s, 160x120, a tone) and the describer runs at its cheapest real setting
(SmolLM2, 8 new tokens, OCR and ASR on). Writes bench/results/engines.json with each engine's
end-to-end time ÷ the local loop's. Goal ≤ 1.25 on a 2-core machine. ``--clips N`` (default
200) sets the corpus size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 1.25
CHEAP = [
    "--set",
    "describe.max_new_tokens=8",
    "--set",
    "describe.batch_size=8",
    "--set",
    "ocr.max_frames=1",
    "--set",
    "media.num_frames=4",
    "--force",
]


def synthesize(folder: Path, clips: int) -> Path:
    from transforms.media import ffmpeg_binary

    folder.mkdir(parents=True)
    rows = []
    for i in range(clips):
        path = folder / f"clip{i:04d}.mp4"
        subprocess.run(
            [
                ffmpeg_binary(),
                "-y",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size=160x120:rate=10,hue=h={i * 37 % 360}",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency={200 + i * 7}",
                "-t",
                "2",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                str(path),
            ],
            check=True,
        )
        rows.append({"item_id": path.name, "uri": path.name, "title": f"Test pattern {i}"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def run(engine: str, manifest: Path, lake: Path) -> float:
    from jobs.cli import main as enrich

    started = time.perf_counter()
    assert (
        enrich(
            [
                "run",
                "--input",
                str(manifest),
                "--lake",
                str(lake),
                "--config",
                str(ROOT / "configs" / "demo.yaml"),
                "--engine",
                engine,
                *CHEAP,
            ]
        )
        == 0
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=200)
    clips = parser.parse_args().clips
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthesize(Path(tmp) / "clips", clips)
        seconds = {
            engine: round(run(engine, manifest, Path(tmp) / engine), 2)
            for engine in ("local", "beam", "spark")
        }
    ratios = {engine: round(value / seconds["local"], 3) for engine, value in seconds.items()}
    result = {
        "benchmark": "engines",
        "clips": clips,
        "seconds": seconds,
        "ratio_to_local": ratios,
        "goal": f"<= {GOAL}",
        "ratio": round(max(ratios.values()) / GOAL, 3),
    }
    (ROOT / "bench" / "results" / "engines.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
