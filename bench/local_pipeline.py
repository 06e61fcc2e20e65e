"""Benchmark: the local engine on the demo corpus, end to end, with real models.

Writes bench/results/local_pipeline.json: wall time, seconds per clip and per-stage seconds.
Run with `make bench` (or `.venv/bin/python bench/local_pipeline.py`). The ratio printed last
is seconds per clip against the goal (lower is better; ≤ 1.0 passes).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_SECONDS_PER_CLIP = 15.0  # CPU, 2 cores, offline demo models, models already loaded once


def run_once(manifest: Path, lake: Path, summary: Path) -> dict:
    from jobs.cli import main

    started = time.perf_counter()
    code = main(
        [
            "run",
            "--input",
            str(manifest),
            "--lake",
            str(lake),
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--summary-json",
            str(summary),
        ]
    )
    if code != 0:
        raise SystemExit(f"enrich run failed with exit code {code}")
    result = json.loads(summary.read_text())
    result["wall_s"] = round(time.perf_counter() - started, 2)
    return result


def main() -> None:
    from jobs.demo_media import build_demo_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        manifest = build_demo_corpus(tmp_path / "media")
        runs = [run_once(manifest, tmp_path / "lake", tmp_path / f"s{i}.json") for i in range(2)]
    warm = runs[-1]
    seconds_per_clip = warm["wall_s"] / max(1, warm["items"])
    result = {
        "benchmark": "local_pipeline",
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "items": warm["items"],
        "first_run_wall_s": runs[0]["wall_s"],
        "warm_run_wall_s": warm["wall_s"],
        "seconds_per_clip": round(seconds_per_clip, 2),
        "stage_seconds": {k: v["seconds"] for k, v in warm["stage_stats"].items()},
        "goal_seconds_per_clip": GOAL_SECONDS_PER_CLIP,
        "ratio": round(seconds_per_clip / GOAL_SECONDS_PER_CLIP, 3),
    }
    out = ROOT / "bench" / "results" / "local_pipeline.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


if __name__ == "__main__":
    main()
