"""examples/ and the documented Python snippets, run for real: one `enrich run` over
examples/manifest.jsonl (text-only rows and a clip that is not there), a validated and
published release, then the example scripts and every Python block marked
`<!-- tested: tests/test_examples.py -->` in README.md and docs/ against that lake."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.config import load_config
from jobs.cli import main
from schemas import read_table

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RELEASE = "2026-11-01"  # the label the documented release snippet reads
# Text-only items need none of the media models: leave them unloaded to keep the test short.
NO_MEDIA_MODELS = [f"--set={stage}.enabled=false" for stage in ("asr", "audio", "ocr", "visual")]

sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    lake = tmp_path_factory.mktemp("examples") / "lake"
    argv = ["run", "--input", str(EXAMPLES / "manifest.jsonl"), "--lake", str(lake)]
    assert main([*argv, "--no-report", *NO_MEDIA_MODELS]) == 0
    assert main(["validate", "--lake", str(lake), "--max-error-rate", "0.5"]) == 0
    assert main(["publish", "--lake", str(lake), "--label", RELEASE]) == 0
    return lake


@pytest.mark.slow
def test_the_example_manifest_enriches_its_text_only_rows_and_records_the_missing_clip(lake):
    descriptions = {row["item_id"]: row for row in read_table(lake, "descriptions").to_pylist()}
    assert sorted(descriptions) == ["book-42", "film-7", "podcast-3"]
    assert {row["media_kind"] for row in descriptions.values()} == {"text"}
    assert "Balcony Gardening" in descriptions["book-42"]["description"]
    errors = read_table(lake, "errors").to_pylist()
    assert [(row["item_id"], row["code"]) for row in errors] == [("clip-1", "not_found")]
    assert read_table(lake, "semantic_ids").num_rows == 3


@pytest.mark.slow
def test_read_features_prints_every_sid(lake, capsys):
    import read_features

    read_features.main(str(lake))
    out = capsys.readouterr().out
    assert "3 descriptions, 3 SIDs, embeddings (3, 384)" in out
    assert re.search(r"^book-42: \d+-\d+-\d+-\d+$", out, re.M)


@pytest.mark.slow
def test_the_point_in_time_join_gives_no_features_before_the_lake_had_them(lake):
    from point_in_time_join import point_in_time_join

    now = datetime.now(UTC)
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["book-42", "film-7", "book-42"],
            "ts": [str(now - timedelta(days=2)), str(now + timedelta(days=1)), str(now)],
        }
    )
    joined = point_in_time_join(str(lake), interactions).set_index(["user_id", "item_id"])
    sids = {row["item_id"]: row["sid"] for row in read_table(lake, "semantic_ids").to_pylist()}
    assert pd.isna(joined.loc[("u1", "book-42"), "sid"])  # two days before the first run
    assert joined.loc[("u1", "film-7"), "sid"] == sids["film-7"]


def documented_python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        pattern = r"<!-- tested: tests/test_examples\.py[^>]*-->\n```python\n(.*?)```"
        for number, code in enumerate(re.findall(pattern, text, re.S)):
            blocks.append((f"{path.relative_to(ROOT)}#{number}", code))
    return blocks


@pytest.mark.slow
def test_every_documented_python_block_runs_against_a_real_lake(lake, tmp_path, monkeypatch):
    blocks = documented_python_blocks()
    assert len(blocks) >= 6
    (tmp_path / "lake").symlink_to(lake)
    monkeypatch.chdir(tmp_path)  # the snippets read "lake"
    day = datetime(2026, 11, 20, 12, tzinfo=UTC)
    interactions = pd.DataFrame(
        {"user_id": ["u1"], "item_id": ["book-42"], "ts": [pd.Timestamp(day)]}
    )
    for name, code in blocks:
        namespace = {"interactions": interactions}
        exec(compile(code, name, "exec"), namespace)  # noqa: S102 - our own documentation


def test_the_example_configs_load_with_the_real_loader():
    production = load_config(EXAMPLES / "production" / "config.yaml")
    assert production.describe.backend == "openai"
    assert production.describe.api_key_env == "VLLM_API_KEY"
    assert production.run.staging_uri.startswith("s3://")
    evaluation = load_config(EXAMPLES / "evaluation" / "eval.yaml")
    assert evaluation.semantic_ids.levels == 2
    assert "description_shuffled" in evaluation.evaluate.representations


def test_the_airflow_variables_are_the_ones_the_dags_read():
    sys.path.insert(0, str(ROOT / "dags"))
    from enrich_common import DEFAULTS

    variables = json.loads((EXAMPLES / "airflow" / "variables.json").read_text())
    assert variables and set(variables) <= {f"enrich_{name}" for name in DEFAULTS}
    assert all(isinstance(value, str) for value in variables.values())
    assert variables["enrich_config"].endswith("examples/production/config.yaml")


def test_the_backfill_example_parses_with_the_backfill_parser():
    from jobs.backfill import build_parser

    script = (EXAMPLES / "backfill" / "spark_submit.sh").read_text().replace("\\\n", " ")
    command = next(line for line in script.splitlines() if line.startswith("spark-submit"))
    words = shlex.split(command)
    args = build_parser().parse_args(words[words.index("jobs/backfill.py") + 1 :])
    assert args.start == "2026-11-01" and args.end == "2026-11-30"
    assert os.access(EXAMPLES / "backfill" / "spark_submit.sh", os.X_OK)
