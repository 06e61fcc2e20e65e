"""Benchmark: driver memory as the corpus grows (Spark local[2]).

The driver plans and commits; the workers read the input and do the work. So the driver's peak
RSS must not follow the item count. Each run is one ``enrich run --engine spark`` in a fresh
process that reports its own peak RSS (VmHWM: the Python driver only, not the JVM or the
Python workers). Items are manifest rows whose media is missing, the cheapest real items:
every one goes through planning, a task, the media stage, typed staging, reconciliation and
the streamed MERGE of its ``errors`` row, with no model time. Goal: peak RSS at 20,000 items
≤ 1.3 × at 2,000. Writes bench/results/scale.json (median, min, max of ``--repeats`` runs per
size, and the seconds each took).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.3
DRIVER = """
import sys
from jobs.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print("PEAK_KB", status, "EXIT", code)
"""
SETTINGS = [
    "--config",
    str(ROOT / "configs" / "demo.yaml"),
    "--set",
    "asr.enabled=false",
    "--set",
    "ocr.enabled=false",
    "--engine",
    "spark",
    "--engine-arg=master=local[2]",
    "--no-report",
]


def write_manifest(folder: Path, items: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.jsonl"
    with manifest.open("w") as out:
        for i in range(items):
            row = {"item_id": f"item-{i:07d}", "uri": f"media/{i:07d}.mp4", "title": f"clip {i}"}
            out.write(json.dumps(row) + "\n")
    return manifest


def driver_peak_kb(manifest: Path, lake: Path) -> tuple[int, float]:
    """(peak RSS of the driver process in kB, seconds) for one run."""
    import time

    started = time.perf_counter()
    argv = ["run", "--input", str(manifest), "--lake", str(lake), *SETTINGS]
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv], capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - started
    line = next((x for x in result.stdout.splitlines() if x.startswith("PEAK_KB")), None)
    if line is None or not line.endswith("EXIT 0"):
        raise RuntimeError(f"run failed: {result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return int(line.split()[1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        manifests = {n: write_manifest(Path(tmp) / f"in-{n}", n) for n in args.sizes}
        runs: dict[int, list[tuple[int, float]]] = {n: [] for n in args.sizes}
        for repeat in range(args.repeats):  # sizes side by side in each round
            for n in args.sizes:
                runs[n].append(driver_peak_kb(manifests[n], Path(tmp) / f"lake-{n}-{repeat}"))
                print(f"{n} items: peak {runs[n][-1][0] / 1024:.0f} MiB in {runs[n][-1][1]:.0f} s")
        for n, values in runs.items():
            peaks = [p / 1024 for p, _ in values]
            figures[str(n)] = {
                "driver_peak_rss_mib": {
                    "median": round(statistics.median(peaks), 1),
                    "min": round(min(peaks), 1),
                    "max": round(max(peaks), 1),
                },
                "seconds": [round(s, 1) for _, s in values],
            }
    small, large = (figures[str(n)]["driver_peak_rss_mib"]["median"] for n in args.sizes)
    growth = round(large / small, 3)
    result = {
        "benchmark": "scale",
        "engine": "spark local[2]",
        "sizes": args.sizes,
        "figures": figures,
        "rss_growth": growth,
        "headline": ["rss_growth", f"figures.{args.sizes[1]}.driver_peak_rss_mib.median"],
        "ratio": round(growth / GOAL, 3),  # <= 1.0 meets the goal
        "goal": f"driver peak RSS at {args.sizes[1]} items <= {GOAL} x at {args.sizes[0]}",
        "pass": growth <= GOAL,
    }
    out = ROOT / "bench" / "results" / "scale.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
