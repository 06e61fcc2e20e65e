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
    assert [len(records) for records in results] == [2, 2, 2]
    for records in results:
        assert records[0]["uri"] == str(tmp_path / "clips" / "one.mp4")  # relative to the manifest
        assert records[0]["tags"] == ["a", "b"]
        assert records[1]["uri"] == "/abs/two.mp4"
        assert records[1]["tags"] == []


def test_a_row_without_uri_or_text_is_an_error_record(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"item_id": "0", "uri": "a"}\n{"item_id": "1"}\n')
    good, bad = read_input(tmp_path / "m.jsonl")
    assert "error" not in good
    assert (bad["item_id"], bad["error"]["code"], bad["error"]["stage"]) == (
        "1",
        "bad_row",
        "manifest",
    )
    assert "m.jsonl row 2: lacks uri" in bad["error"]["message"]


def test_a_manifest_without_one_usable_row_fails_fast(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"item_id": "1"}\n')
    with pytest.raises(ManifestError, match="not one usable row .*row 1: lacks uri"):
        read_input(tmp_path / "m.jsonl")


def test_duplicate_item_ids_fail_fast(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"item_id": "1", "uri": "a"}\n{"item_id": "1", "uri": "b"}\n'
    )
    with pytest.raises(ManifestError, match="appears twice"):
        read_input(tmp_path / "m.jsonl")


def test_a_bad_json_line_is_an_error_record_named_by_its_row(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"item_id": "1", "uri": "a"}\n{oops\n')
    _, bad = read_input(tmp_path / "m.jsonl")
    assert (bad["item_id"], bad["error"]["code"]) == ("m.jsonl#row-2", "bad_row")
    assert "m.jsonl row 2: not valid JSON" in bad["error"]["message"]


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


def test_shards_cover_every_row_once_whatever_the_cut(tmp_path):
    """The driver cuts by row ranges and byte offsets; tasks read their share back exactly,
    across blank lines and line separators that are valid inside JSON strings."""
    from transforms.manifest import plan_input, read_task_input

    rows = [
        {"item_id": f"i{n:03d}", "uri": f"c{n}.mp4", "title": f"t\u2028{n}\x85"} for n in range(23)
    ]
    text = "".join(
        json.dumps(r, ensure_ascii=False) + ("\n\n" if n % 5 == 0 else "\n")
        for n, r in enumerate(rows)
    )
    (tmp_path / "m.jsonl").write_text(text)
    for per_task, parallel in [(1, 1), (4, 2), (5, 3), (100, 1)]:
        tasks = plan_input(str(tmp_path / "m.jsonl"), per_task, parallel)
        assert len(tasks) % parallel == 0 or len(tasks) == 23
        read = [r for task in tasks for r in read_task_input(task)]
        assert [r["item_id"] for r in read] == [r["item_id"] for r in rows]
        assert [len(read_task_input(s)) for s in tasks] == [s.items for s in tasks]
    assert read[7]["title"] == "t\u20287\x85"


def test_csv_ids_and_titles_are_read_as_written(tmp_path):
    (tmp_path / "m.csv").write_text("item_id,uri,title\n007,a.mp4,NA\n0042,b.mp4,null\n")
    records = read_input(tmp_path / "m.csv")
    assert [(r["item_id"], r["title"]) for r in records] == [("007", "NA"), ("0042", "null")]


def test_paths_and_uris_go_through_one_storage_layer(tmp_path):
    from core import storage
    from core.config import MediaConfig
    from transforms.media import confine
    from transforms.stage import StageError

    (tmp_path / "a b.mp4").write_bytes(b"x")
    assert storage.local_path(f"file://{tmp_path}/a%20b.mp4") == tmp_path / "a b.mp4"
    with pytest.raises(storage.StorageError, match="another machine"):
        storage.local_path("file://otherhost/data/a.mp4")
    config = MediaConfig(allowed_roots=["s3://bucket/in"], allowed_schemes=["file", "s3"])
    assert confine("s3://bucket/in/x/clip.mp4", config) == "s3://bucket/in/x/clip.mp4"
    for uri, code in [
        ("s3://bucket/input-other/clip.mp4", "path_not_allowed"),
        ("s3://other/in/clip.mp4", "path_not_allowed"),
        ("gs://bucket/in/clip.mp4", "scheme_not_allowed"),
    ]:
        with pytest.raises(StageError) as caught:
            confine(uri, config)
        assert caught.value.code == code, uri
