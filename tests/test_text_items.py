"""Text-only items: manifest rows without media (a title, tags, a text) go through every stage
of a real `enrich run` beside a real clip, are described from their metadata, embedded and
coded, skipped when unchanged and enriched again when their text changes."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from schemas.store import DeltaStore
from tests.cli_helpers import run_argv
from tests.media_factory import synth_video
from transforms.manifest import metadata_sha256, read_input
from transforms.media import fetch_input

TEXT_ITEMS = [
    {
        "item_id": "book-garden",
        "title": "Balcony Gardening",
        "tags": "gardening; tomatoes",
        "text": "A patient guide to growing tomatoes and roses on a small balcony.",
    },
    {
        "item_id": "film-saturn",
        "title": "Rings of Saturn",
        "text": "Astronomers explain the icy rings of Saturn.",
        "uri": None,
    },
    {"item_id": "note-jazz", "uri": "", "text": "Saxophone lessons for a curious beginner."},
]
CHEAP = ("media.num_frames=2", "describe.max_new_tokens=12")  # on top of cli_helpers.QUICK


def write_manifest(folder: Path, text_items: list[dict], clip_title: str = "Test pattern") -> Path:
    rows = [{"item_id": "clip", "uri": "clip.mp4", "title": clip_title}, *text_items]
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(manifest: Path, lake: Path) -> dict:
    summary = lake.parent / "summary.json"
    demo = ("--no-report", "--config", "configs/demo.yaml", "--summary-json", str(summary))
    assert main(run_argv(manifest, lake, *CHEAP, extra=demo)) == 0
    return json.loads(summary.read_text())


def table(lake: Path, name: str) -> dict[str, dict]:
    store = DeltaStore(lake)
    if not store.exists(name):
        return {}
    return {row["item_id"]: row for row in store.read(name).to_pylist()}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """A clip and three text items: a first run, an unchanged rerun, a rerun after one
    item's text was edited, and one after the clip's title was edited (same file). Returns
    the lake, the summaries and the tables after each run."""
    folder = tmp_path_factory.mktemp("text_items")
    synth_video(folder / "clip.mp4", seconds=1, size="160x120")
    lake = folder / "lake"
    edited = [dict(item) for item in TEXT_ITEMS]
    edited[1]["text"] = "Astronomers explain the moons of Jupiter instead."
    summaries, tables = [], []
    retitled = {"clip_title": "Colour bars"}
    for items, clip in ((TEXT_ITEMS, {}), (TEXT_ITEMS, {}), (edited, {}), (edited, retitled)):
        summaries.append(run(write_manifest(folder, items, **clip), lake))
        tables.append({n: table(lake, n) for n in ("descriptions", "embeddings", "semantic_ids")})
    return lake, summaries, tables


@pytest.mark.slow
def test_text_items_are_described_from_their_metadata_with_no_error_rows(three_runs):
    lake, summaries, tables = three_runs
    first = summaries[0]
    assert (first["items"], first["succeeded"], first["failed"], first["skipped"]) == (4, 4, 0, 0)
    assert table(lake, "errors") == {}
    described = tables[0]["descriptions"]
    assert described["clip"]["media_kind"] == "video" and described["clip"]["text"] is None
    garden = described["book-garden"]
    assert garden["uri"] is None and garden["media_kind"] == "text"
    assert garden["text"] == TEXT_ITEMS[0]["text"] and garden["tags"] == ["gardening", "tomatoes"]
    assert garden["frames_sampled"] == 0 and garden["file_size"] is None
    assert garden["prompt_version"] == "offline_v3"
    for item in TEXT_ITEMS:
        description = described[item["item_id"]]["description"]
        assert description.endswith(f'Text: "{item["text"]}".'), description  # quoted whole
        assert "no media" in description and "frames" not in description, description
    assert 'titled "Balcony Gardening"' in garden["description"]
    assert "Tags: gardening, tomatoes." in garden["description"]


@pytest.mark.slow
def test_text_items_get_embeddings_and_semantic_ids(three_runs):
    _, _, tables = three_runs
    everything = {"clip", *(item["item_id"] for item in TEXT_ITEMS)}
    assert set(tables[0]["embeddings"]) == set(tables[0]["semantic_ids"]) == everything
    assert len(tables[0]["embeddings"]["note-jazz"]["embedding"]) == 384


@pytest.mark.slow
def test_an_unchanged_rerun_skips_every_item(three_runs):
    _, summaries, tables = three_runs
    second = summaries[1]
    assert (second["items"], second["succeeded"], second["failed"], second["skipped"]) == (
        4,
        0,
        0,
        4,
    )
    assert tables[1]["descriptions"] == tables[0]["descriptions"]


@pytest.mark.slow
def test_an_edited_text_re_enriches_only_that_item(three_runs):
    _, summaries, tables = three_runs
    third = summaries[2]
    assert (third["items"], third["succeeded"], third["failed"], third["skipped"]) == (4, 1, 0, 3)
    before, after = tables[1]["descriptions"], tables[2]["descriptions"]
    changed = {i for i in after if after[i]["run_id"] != before[i]["run_id"]}
    assert changed == {"film-saturn"}
    assert "moons of Jupiter" in after["film-saturn"]["description"]
    assert after["film-saturn"]["content_sha256"] != before["film-saturn"]["content_sha256"]
    vectors = tables[1]["embeddings"], tables[2]["embeddings"]
    assert vectors[1]["film-saturn"]["embedding"] != vectors[0]["film-saturn"]["embedding"]
    assert vectors[1]["note-jazz"]["embedding"] == vectors[0]["note-jazz"]["embedding"]


@pytest.mark.slow
def test_an_edited_title_re_enriches_a_clip_whose_file_did_not_change(three_runs):
    """The prompt reads the title, so a new title is new content even with the same bytes."""
    _, summaries, tables = three_runs
    fourth = summaries[3]
    assert (fourth["items"], fourth["succeeded"], fourth["failed"], fourth["skipped"]) == (
        4,
        1,
        0,
        3,
    )
    before, after = tables[2]["descriptions"], tables[3]["descriptions"]
    assert {i for i in after if after[i]["run_id"] != before[i]["run_id"]} == {"clip"}
    assert after["clip"]["content_sha256"] == before["clip"]["content_sha256"]
    assert 'titled "Colour bars"' in after["clip"]["description"]


# -- the manifest ---------------------------------------------------------------------------------
def test_a_row_without_uri_title_or_text_is_an_error_record_naming_the_row(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    rows = [{"item_id": "a", "title": "Fine"}, {"item_id": "b", "tags": "x", "text": "  "}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fine, refused = read_input(manifest)
    assert "error" not in fine and refused["error"]["code"] == "bad_row"
    assert re.search(
        "row 2: lacks uri: give it a uri .* a title or text", refused["error"]["message"]
    )
    manifest.write_text(json.dumps(rows[1]) + "\n")  # no usable row: the input itself is wrong
    assert main(["run", "--input", str(manifest), "--lake", str(tmp_path / "lake")]) == 2
    assert "not one usable row (m.jsonl row 1: lacks uri" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_every_manifest_format_carries_text_and_allows_no_uri(tmp_path):
    rows = [
        {"item_id": "t", "uri": None, "title": "Only a title", "tags": "a, b", "text": None},
        {"item_id": "s", "uri": None, "title": None, "tags": None, "text": "Only a text"},
        {"item_id": "m", "uri": "clip.mp4", "title": None, "tags": None, "text": "A caption"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text(
        'item_id,uri,title,tags,text\nt,,Only a title,"a, b",\ns,,,,Only a text\n'
        "m,clip.mp4,,,A caption\n"
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    for ext in ("jsonl", "csv", "parquet"):
        records = {r["item_id"]: r for r in read_input(tmp_path / f"m.{ext}")}
        assert records["t"]["uri"] is None and records["t"]["text"] is None, ext
        assert records["t"]["tags"] == ["a", "b"], ext
        assert records["s"]["uri"] is None and records["s"]["text"] == "Only a text", ext
        assert records["m"]["uri"] == str(tmp_path / "clip.mp4"), ext
        assert records["m"]["text"] == "A caption", ext


def test_a_media_folder_gives_every_record_a_text_field(tmp_path):
    synth_video(tmp_path / "a.mp4", seconds=0.5, size="64x48", audio=False)
    [record] = read_input(tmp_path)
    assert "text" in record and record["text"] is None


def test_a_text_items_content_hash_is_its_metadata_and_reads_no_file(tmp_path):
    from core.config import MediaConfig

    record = {"item_id": "t", "uri": None, "title": "T", "tags": ["a"], "text": "x"}
    record["published_at"] = None
    fetch_input(record, MediaConfig(allowed_roots=[str(tmp_path)]))
    assert record["local_path"] is None and record["content_sha256"] == metadata_sha256(record)
    assert metadata_sha256({**record, "text": "y"}) != record["content_sha256"]
    assert metadata_sha256({**record, "tags": ["b"]}) != record["content_sha256"]


def test_the_text_is_evidence_so_sentences_about_it_are_kept():
    from transforms.describe.grounding import evidence_vocabulary, grounded_sentences

    book = {"title": "Rings of Saturn", "media_kind": "text"}
    sentence = "This item explains the icy rings to astronomers."
    with_text = evidence_vocabulary({**book, "text": "Astronomers explain the icy rings."})
    assert grounded_sentences(sentence, with_text, 0.75) == [sentence]
    assert grounded_sentences(sentence, evidence_vocabulary(book), 0.75) == []


def test_the_report_says_a_text_item_has_no_frame_to_show():
    from core.config import MediaConfig
    from jobs.report import first_frame

    assert first_frame(None, "text", MediaConfig()) == (None, "text only (no media)")
