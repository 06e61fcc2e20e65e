import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.manifest import ManifestError, content_sha256, read_input


def test_directory_input_is_recursive_with_relative_item_ids(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "top.MOV").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not media")
    records = read_input(tmp_path)
    assert [r["item_id"] for r in records] == ["a/b/clip.mp4", "top.MOV"]
    assert all(r["uri"].startswith(str(tmp_path)) for r in records)


def test_jsonl_csv_and_parquet_manifests_agree(tmp_path):
    rows = [
        {"item_id": "1", "uri": "clips/one.mp4", "title": "One", "tags": "a, b"},
        {"item_id": "2", "uri": "/abs/two.mp4", "title": None, "tags": None},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "m.csv").write_text(
        'item_id,uri,title,tags\n1,clips/one.mp4,One,"a, b"\n2,/abs/two.mp4,,\n'
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    results = [read_input(tmp_path / f"m.{ext}") for ext in ("jsonl", "csv", "parquet")]
    for records in results:
        assert records[0]["uri"] == str(tmp_path / "clips" / "one.mp4")  # relative to the manifest
        assert records[0]["tags"] == ["a", "b"]
        assert records[1]["uri"] == "/abs/two.mp4"
        assert records[1]["tags"] == []


def test_manifest_row_without_uri_fails_fast(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"item_id": "1"}\n')
    with pytest.raises(ManifestError, match="row 1 lacks uri"):
        read_input(tmp_path / "m.jsonl")


def test_duplicate_item_ids_fail_fast(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"item_id": "1", "uri": "a"}\n{"item_id": "1", "uri": "b"}\n'
    )
    with pytest.raises(ManifestError, match="appears twice"):
        read_input(tmp_path / "m.jsonl")


def test_bad_json_line_names_the_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"item_id": "1", "uri": "a"}\n{oops\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2"):
        read_input(tmp_path / "m.jsonl")


def test_unknown_manifest_format_fails_fast(tmp_path):
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(ManifestError, match="expected a directory"):
        read_input(tmp_path / "m.xlsx")


def test_content_hash_streams_and_tolerates_missing_files(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert (
        content_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert content_sha256(tmp_path / "missing") is None
