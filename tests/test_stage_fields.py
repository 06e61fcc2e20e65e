"""Declared stage fields: each stage names the record fields it needs and adds; the configured
chains produce every field a stage, the prompt or a table row reads; the prompt reads its
fields strictly; and media's audio_error and frame_count reach the descriptions table."""

import random
from pathlib import Path

import pytest

from core.config import MediaConfig, load_config
from schemas.rows import DESCRIPTION_FIELDS, EMBEDDING_FIELDS, ERROR_FIELDS, table_rows
from schemas.store import rows_to_table
from schemas.tables import LINEAGE_COLUMNS, TABLES
from tests.media_factory import synth_video
from transforms.describe.prompt import PROMPT_FIELDS, MissingField, item_facts
from transforms.media import MediaStage, Probe
from transforms.pipeline import INPUT_FIELDS, build_stages, unproduced_fields
from transforms.stage import Stage

REPO = Path(__file__).resolve().parents[1]
ROW_FIELDS = {*DESCRIPTION_FIELDS, *EMBEDDING_FIELDS, *ERROR_FIELDS, *LINEAGE_COLUMNS}


@pytest.mark.parametrize("config_file", [None, "configs/demo.yaml"])
@pytest.mark.parametrize("signals", ["true", "false"])
def test_every_configured_chain_produces_what_its_stages_prompt_and_rows_read(config_file, signals):
    overrides = [f"{stage}.enabled={signals}" for stage in ("asr", "ocr", "visual")]
    config = load_config(str(REPO / config_file) if config_file else None, overrides)
    stages = build_stages(config)
    assert unproduced_fields(stages, PROMPT_FIELDS | ROW_FIELDS) == []


def test_a_renamed_field_is_named_as_unproduced():
    class Reader(Stage):
        name = "reader"
        needs = frozenset({"transkript"})

    stages = build_stages(load_config())
    assert unproduced_fields([*stages, Reader({})], {"audio_err"}) == [
        "reader needs 'transkript', which no earlier stage adds",
        "'audio_err' is read but no stage adds it",
    ]
    assert {"item_id", "uri", "title", "content_sha256"} <= INPUT_FIELDS


def prompt_record() -> dict:
    return {
        "item_id": "clip",
        "title": "Cute cat",
        "tags": ["pets"],
        "text": None,
        "duration_s": 4.0,
        "width": 64,
        "height": 48,
        "fps": 25,
        "has_audio": True,
        "audio_rms": 0.2,
        "transcript": "",
        "ocr_text": "SALE",
        "frame_stats": {},
        "visual_tags": [],
    }


def test_the_prompt_reads_declared_fields_strictly():
    record = prompt_record()
    assert set(record) - {"item_id"} == PROMPT_FIELDS
    assert (
        item_facts(record, 100)["audio"] == "sound without recognisable speech (music or ambient)"
    )
    del record["transcript"]
    with pytest.raises(MissingField, match="'clip' has no field 'transcript'"):
        item_facts(record, 100)


def added_fields(stage: Stage, records: list[dict]) -> list[set[str]]:
    before = [set(r) for r in records]
    stage.process_batch(records)
    assert not [r["error"] for r in records if r.get("error")]
    return [set(r) - keys for r, keys in zip(records, before, strict=True)]


def test_stages_add_exactly_what_they_declare(tmp_path):
    clips = [
        synth_video(tmp_path / "with_audio.mp4", seconds=1),
        synth_video(tmp_path / "video_only.mp4", seconds=1, audio=False),
    ]
    records = [
        {"item_id": p.stem, "uri": str(p), "title": None, "tags": [], "published_at": None}
        for p in clips
    ]
    config = load_config(None, [f"{s}.enabled=false" for s in ("asr", "ocr", "visual")])
    config.media.allowed_roots = [str(tmp_path)]
    media, asr, ocr, visual = build_stages(config)[:4]
    for stage in (media, asr, ocr, visual):
        assert added_fields(stage, records) == [set(stage.adds)] * len(records), stage.name
    assert [r["frame_count"] > 0 for r in records] == [True, True]
    assert [r["has_audio"] for r in records] == [True, False]
    assert [r["audio_error"] for r in records] == [None, None]


def test_a_skipped_audio_track_leaves_its_reason_in_the_descriptions_row(tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(random.Random(3).randbytes(5000))  # an audio track no decoder reads
    stage = MediaStage(MediaConfig(on_audio_error="skip_audio"))
    record = {"item_id": "clip", "uri": str(noise), "frame_count": 100}
    probe = Probe(video_codec="h264", audio_codec="aac")
    assert stage.audio_or_skip(noise, probe, record) is None
    assert "audio" in record["audio_error"]
    row = table_rows([{**record, "description": "x", "embedding": [0.0]}], "run")
    table = rows_to_table("descriptions", TABLES["descriptions"].schema, row["descriptions"])
    assert table["audio_error"].to_pylist() == [record["audio_error"]]
    assert table["frame_count"].to_pylist() == [100]
