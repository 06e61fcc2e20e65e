"""Write bench/results/SUMMARY.md: one row per benchmark with its headline figures, its goal
and pass or fail. Every benchmark writes a ``ratio`` normalised so that <= 1.0 meets its goal.

Run by ``make bench`` after the benchmarks (it is not a benchmark itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
HEADLINE_WORDS = ("ratio", "speedup", "per_clip", "unique_fraction", "mse", "total_s")
MAX_FIGURES = 6


def leaves(value, prefix: str = ""):
    """(dotted key, number) for every numeric leaf of a JSON value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield prefix, value


def headline(result: dict) -> str:
    """The figures a result names in ``headline``, else those whose name says ratio, speed-up,
    per clip, unique fraction or MSE."""
    named = result.get("headline")
    figures = [(key, value) for key, value in leaves(result) if key != "ratio"]
    if named:
        picked = [(key, value) for key, value in figures if key in named]
    else:
        picked = [(k, v) for k, v in figures if any(w in k for w in HEADLINE_WORDS)]
        picked.sort(key=lambda figure: "ratio" not in figure[0])  # ratios first
    return "; ".join(f"{key} {value:g}" for key, value in picked[:MAX_FIGURES])


def goal_text(result: dict) -> str:
    goal = result.get("goal") or result.get("goals") or "ratio <= 1.0"
    if isinstance(goal, dict):
        return "; ".join(f"{k} {v}" for k, v in goal.items())
    return str(goal)


def summary_rows(results: Path, failed: list[str]) -> list[str]:
    rows = []
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        ratio = result.get("ratio")
        verdict = "no ratio" if ratio is None else ("pass" if ratio <= 1.0 else "**fail**")
        measured = measured_at(path)
        rows.append(
            f"| {path.stem} | {headline(result)} | {goal_text(result)} | {ratio} | {verdict} "
            f"| {measured} |"
        )
    rows += [f"| {name} | did not finish |  |  | **fail** |  |" for name in failed]
    rows += [
        f"| {name} | {why} | {goal} |  | not run |  |"
        for name, (why, goal) in NOT_RUN_HERE.items()
        if not (results / f"{name}.json").exists()
    ]
    return rows


# Benchmarks whose script is ready but that cannot run on the 2-core machine: why, and the goal.
NOT_RUN_HERE = {
    "gpu_throughput": (
        "script ready, not run (no device lent): python3 bench/gpu_throughput.py --out DIR",
        "streaming >= 4000 clips/h with the GPU busy >= 80%",
    ),
}


def measured_at(path: Path) -> str:
    """When the result was written: its file's time if changed since the last commit,
    else that commit's time (a fresh clone gives every file the checkout time)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True)

    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    if git("diff", "--quiet", "HEAD", "--", path.name).returncode == 0:
        committed = git("log", "-1", "--format=%ct", "--", path.name).stdout.strip()
        stamp = datetime.fromtimestamp(int(committed), UTC) if committed else stamp
    return stamp.strftime("%Y-%m-%d %H:%M")


def write_summary(results: Path = RESULTS, failed: list[str] | None = None) -> Path:
    lines = [
        "# Benchmark summary",
        "",
        "Written by `make bench` (bench/summary.py). `ratio` is each benchmark's figure divided",
        "by its goal, so **<= 1.0 passes**. Machine: 2 cores, no GPU, unless a result says so.",
        "",
        "| benchmark | figures | goal | ratio | result | measured (UTC) |",
        "|---|---|---|---|---|---|",
        *summary_rows(results, failed or []),
        "",
    ]
    out = results / "SUMMARY.md"
    out.write_text("\n".join(lines))
    return out


if __name__ == "__main__":
    path = write_summary(failed=sys.argv[1:])
    print(path.read_text())
