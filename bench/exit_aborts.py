"""How often a consumer's read of a Delta table kills the interpreter at exit.

deltalake 1.6.6 (the newest on PyPI) can abort a process that read a table through DataFusion
("terminate called without an active exception" at exit, delta-rs #2184). Each reader runs in
``--runs`` fresh processes on a small table; a nonzero exit after the rows were printed is an
abort. Writes bench/results/exit_aborts.json. Goal: the project's ``read_table`` never aborts
(ratio = 1 + its aborts and failed reads, so the goal ratio <= 1.0 means none).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
READERS = {
    "deltalake_to_pyarrow_table": "from deltalake import DeltaTable\n"
    "print(DeltaTable(LAKE + '/runs').to_pyarrow_table().num_rows)",
    "deltalake_to_pyarrow_dataset": "from deltalake import DeltaTable\n"
    "print(DeltaTable(LAKE + '/runs').to_pyarrow_dataset().to_table().num_rows)",
    "polars_read_delta": "import polars\nprint(polars.read_delta(LAKE + '/runs').height)",
    "enrich_read_table": "from schemas import read_table\nprint(read_table(LAKE, 'runs').num_rows)",
}


def build_lake(lake: str) -> None:
    from schemas.rows import utc_now
    from schemas.store import DeltaStore

    store = DeltaStore(lake)
    for i in range(3):
        store.merge("runs", [{"run_id": f"r{i}", "updated_at": utc_now()}])


def aborts(code: str, lake: str, runs: int) -> dict:
    """Fresh processes that printed the rows, and how many of them then died."""
    outcomes = [
        subprocess.run(
            [sys.executable, "-c", f"LAKE = {lake!r}\n{code}"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[1],
        )
        for _ in range(runs)
    ]
    read = [o for o in outcomes if o.stdout.strip() == "3"]
    died = [o for o in read if o.returncode != 0]
    return {"runs": runs, "read_ok": len(read), "aborted": len(died)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lake = f"{tmp}/lake"
        build_lake(lake)
        figures = {name: aborts(code, lake, args.runs) for name, code in READERS.items()}
    ours = figures["enrich_read_table"]
    result = {
        "readers": figures,
        "deltalake": __import__("deltalake").__version__,
        "goal": "enrich read_table: 0 aborts",
        "ratio": 1.0 + ours["aborted"] + (ours["runs"] - ours["read_ok"]),
        "headline": [f"readers.{name}.aborted" for name in READERS],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "exit_aborts.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
