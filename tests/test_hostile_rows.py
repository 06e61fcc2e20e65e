"""Hostile manifest rows and folders: a bad row is one error record (the other rows still
run), a problem of the whole input fails fast, and a folder scan through symlink cycles lists
each file once and ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.rows import table_rows
from schemas.tables import ERRORS
from tests.cli_helpers import run_argv
from transforms.manifest import ManifestError, plan_input, read_input, read_task_input

ROOT = Path(__file__).resolve().parents[1]

# JSONL lines as written (raw text: lone surrogates and NaN can only be written this way);
# item_id the record gets → expected error code (None: a good row).
JSONL_ROWS = [
    ('{"item_id": "good-1", "uri": "a.mp4", "title": "Fine", "tags": ["x", 7]}', "good-1", None),
    ('{"item_id": "nul-uri", "uri": "a\\u0000b.mp4"}', "nul-uri", "bad_field"),
    ('{"item_id": "tags-int", "uri": "a.mp4", "tags": 5}', "tags-int", "bad_field"),
    ('{"item_id": "tags-bool", "uri": "a.mp4", "tags": true}', "tags-bool", "bad_field"),
    ('{"item_id": "tags-null", "uri": "a.mp4", "tags": [null]}', "tags-null", "bad_field"),
    (
        '{"item_id": "title-surrogate", "uri": "a.mp4", "title": "x\\ud800y"}',
        "title-surrogate",
        "bad_field",
    ),
    ('{"item_id": "id\\udc80", "uri": "a.mp4"}', "id\\udc80", "bad_field"),
    ('{"item_id": "title-nan", "uri": "a.mp4", "title": NaN}', "title-nan", "bad_field"),
    ('{"item_id": "title-inf", "uri": "a.mp4", "title": -Infinity}', "title-inf", "bad_field"),
    ('{"item_id": "title-list", "uri": "a.mp4", "title": ["a"]}', "title-list", "bad_field"),
    ('{"item_id": Infinity, "uri": "a.mp4"}', "m.jsonl#row-11", "bad_field"),
    ('{"item_id": "good-1 ", "uri": "b.mp4"}', "good-1 ", "bad_field"),
    ('{"item_id": "uri-int", "uri": 5}', "uri-int", "bad_field"),
    ('{"item_id": "twice", "uri": "a.mp4", "title": "a", "title": "b"}', "twice", "bad_row"),
    ("{not json", "m.jsonl#row-15", "bad_row"),
    ('["a list"]', "m.jsonl#row-16", "bad_row"),
    ('{"uri": "no-id.mp4"}', "m.jsonl#row-17", "bad_row"),
    ('{"item_id": "nothing"}', "nothing", "bad_row"),
    ('{"item_id": "good-text", "title": "A book", "text": "About gardens."}', "good-text", None),
    ('{"item_id": ' + "9" * 5000 + "}", "m.jsonl#row-20", "bad_row"),  # over int's digit limit
    ("[" * 100_000 + "]" * 100_000, "m.jsonl#row-21", "bad_row"),  # nested past the stack
]


def outcome(records):
    return {r["item_id"]: (r.get("error") or {}).get("code") for r in records}


@pytest.fixture
def jsonl_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(line.encode() for line, _, _ in JSONL_ROWS) + b"\n\xff\xfe\n")
    return path


def test_each_bad_jsonl_row_is_one_error_record_and_good_rows_read_normally(jsonl_manifest):
    records = read_input(jsonl_manifest)
    expected = {item: code for _, item, code in JSONL_ROWS} | {"m.jsonl#row-22": "bad_row"}
    assert outcome(records) == expected
    good = {r["item_id"]: r for r in records}
    assert good["good-1"]["tags"] == ["x", "7"] and good["good-1"]["title"] == "Fine"
    assert good["good-text"]["uri"] is None and good["good-text"]["text"] == "About gardens."
    for record in records:
        if record.get("error"):
            assert record["error"]["stage"] == "manifest"
            assert record["error"]["message"].startswith("m.jsonl row ")


def test_error_records_say_what_is_wrong(jsonl_manifest):
    messages = {
        r["item_id"]: r["error"]["message"] for r in read_input(jsonl_manifest) if r.get("error")
    }
    assert "uri holds a NUL character" in messages["nul-uri"]
    assert "tags 5 is a int" in messages["tags-int"]
    assert "lone surrogate" in messages["title-surrogate"]
    assert "NaN or infinite" in messages["title-nan"]
    assert "starts or ends with whitespace; ids are not trimmed" in messages["good-1 "]
    assert "key 'title' appears twice" in messages["twice"]
    assert "not UTF-8" in messages["m.jsonl#row-22"]


def test_error_records_become_storable_error_rows(jsonl_manifest):
    """Escaped ids and uris can be written: each bad row is one errors row."""
    refused = [r for r in read_input(jsonl_manifest) if r.get("error")]
    rows = table_rows(refused, "run-1")
    assert len(rows["errors"]) == len(refused) == 20 and not rows["descriptions"]
    stored = {
        r["item_id"]: r for r in pa.Table.from_pylist(rows["errors"], schema=ERRORS).to_pylist()
    }
    assert stored["nul-uri"]["uri"] == "a\\x00b.mp4"  # as written, escaped
    assert (stored["id\\udc80"]["stage"], stored["id\\udc80"]["code"]) == ("manifest", "bad_field")


def test_shards_read_every_row_once_bad_rows_included(jsonl_manifest):
    everything = [r["item_id"] for r in read_input(jsonl_manifest)]
    for per_task, parallel in [(1, 1), (3, 2), (7, 1)]:
        tasks = plan_input(str(jsonl_manifest), per_task, parallel)
        assert [r["item_id"] for s in tasks for r in read_task_input(s)] == everything


def test_parquet_binary_text_is_decoded_and_bad_cells_refuse_their_row(tmp_path):
    table = pa.table(
        {
            "item_id": pa.array([b"p1", b"p2", b"p3", b"p4", b"p5\xff"], pa.binary()),
            "uri": ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"],
            "title": pa.array([b"ok", b"\xff\xfe", None, None, None], pa.binary()),
            "tags": pa.array([None, None, 5, None, None], pa.int64()),
            "text": pa.array([None, None, None, float("nan"), None], pa.float64()),
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    records = read_input(tmp_path / "m.parquet")
    assert outcome(records) == {
        "p1": None,
        "p2": "bad_field",
        "p3": "bad_field",
        "p4": "bad_field",
        "p5\\xff": "bad_field",
    }
    assert records[0]["title"] == "ok"  # not "b'ok'"
    assert "title is not UTF-8" in records[1]["error"]["message"]


def test_csv_cells_that_are_not_utf8_or_rows_of_the_wrong_width_refuse_their_row(tmp_path):
    (tmp_path / "m.csv").write_bytes(
        b"item_id,uri,title\n"
        b"c1,a.mp4,fine\n"
        b"c2,b.mp4,caf\xe9\n"
        b"c3,c.mp4,too,many\n"
        b"c4 ,d.mp4,padded id\n"
        b"c5,d\x00.mp4,\n"
        b"c6,e.mp4,\n"
    )
    records = read_input(tmp_path / "m.csv")
    assert outcome(records) == {
        "c1": None,
        "c2": "bad_field",
        "c4 ": "bad_field",
        "c5": "bad_field",
        "c6": None,
        "c3": "bad_row",  # a line of the wrong width is counted after the file's other rows
    }
    assert "4 cells where the header has 3" in records[-1]["error"]["message"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.csv", b"", "cannot be read as csv"),
        ("m.csv", b"item_id,uri,title,title\na,a.mp4,x,y\n", "column 'title' appears more"),
        ("m.parquet", b"PAR1 not really", "cannot be read as parquet"),
        ("m.jsonl", b'{"item_id": "a", "uri": "a.mp4"}\n{"item_id": "a", "uri": "b"}\n', "twice"),
        ("m.jsonl", b'{"item_id": 1.5, "uri": "a.mp4"}\n', "not one usable row"),
    ],
)
def test_problems_of_the_whole_input_fail_fast(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=message):
        read_input(tmp_path / name)


def test_duplicate_parquet_columns_and_a_fifo_manifest_fail_fast(tmp_path):
    table = pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["x"]), pa.array(["y"])], ["item_id", "uri", "uri"]
    )
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="column 'uri' appears more than once"):
        read_input(tmp_path / "m.parquet")
    os.mkfifo(tmp_path / "f.jsonl")
    with pytest.raises(ManifestError, match="not a regular file"):
        read_input(tmp_path / "f.jsonl")  # refused before it is opened: no blocking read


def test_two_rows_with_one_unusable_id_are_still_a_duplicate(tmp_path):
    line = '{"item_id": "x\\ud800", "uri": "a.mp4"}\n'
    (tmp_path / "m.jsonl").write_text('{"item_id": "ok", "uri": "a.mp4"}\n' + line + line)
    with pytest.raises(ManifestError, match="appears twice"):
        read_input(tmp_path / "m.jsonl")


# -- folder scans ------------------------------------------------------------------------------
def scan_in_child(folder: Path) -> list[str]:
    """item_ids of a folder scan, in a child process that is killed after 60 s."""
    code = (
        "import json, sys; from transforms.manifest import read_input; "
        "records = read_input(sys.argv[1]); "
        "print(json.dumps([(r['item_id'], (r.get('error') or {}).get('code')) for r in records]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [tuple(pair) for pair in json.loads(done.stdout)]


def test_a_folder_with_symlink_cycles_lists_each_file_once_and_ends(tmp_path):
    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    (folder / "other").mkdir()
    (folder / "top.mp4").write_bytes(b"x")
    (folder / "sub" / "clip.mp4").write_bytes(b"x")
    (folder / "other" / "deep.mkv").write_bytes(b"x")
    (folder / "sub" / "up").symlink_to("..")  # a cycle back to the root
    (folder / "other" / "back").symlink_to("../sub")  # two links that chase each other
    (folder / "sub" / "across").symlink_to("../other")
    (folder / "alias").symlink_to("sub")  # a second name for a folder already listed
    assert scan_in_child(folder) == [
        ("other/deep.mkv", None),
        ("sub/clip.mp4", None),
        ("top.mp4", None),
    ]


def test_a_linked_folder_outside_the_tree_is_followed_once(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "far.mp4").write_bytes(b"x")
    (outside / "loop").symlink_to(outside)
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "ext").symlink_to(outside)
    (folder / "ext2").symlink_to(outside)
    assert scan_in_child(folder) == [("ext/far.mp4", None)]


def test_a_file_name_that_is_not_utf8_is_an_error_record(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "ok.mp4").write_bytes(b"x")
    with open(os.path.join(os.fsencode(folder), b"bad\xff.mp4"), "wb") as handle:
        handle.write(b"x")
    records = read_input(folder)
    assert outcome(records) == {"bad\\udcff.mp4": "bad_field", "ok.mp4": None}
    rows = table_rows([r for r in records if r.get("error")], "run-1")["errors"]
    assert pa.Table.from_pylist(rows, schema=ERRORS).num_rows == 1


# -- one real run ------------------------------------------------------------------------------
CHEAP = (  # on top of tests.cli_helpers.QUICK
    "describe.max_new_tokens=12",
    "run.max_error_rate=1.0",  # half the rows are bad on purpose
)
RUN_ROWS = [  # raw JSONL line, expected error code (None: enriched)
    ('{"item_id": "book", "title": "Balcony Gardening", "text": "Tomatoes on a balcony."}', None),
    ('{"item_id": "film", "title": "Rings of Saturn", "tags": "space; astronomy"}', None),
    (json.dumps({"item_id": "long-title", "title": " ".join(["saturn"] * 8000)}), None),
    ('{"item_id": "nul", "uri": "clip\\u0000.mp4"}', "bad_field"),
    ('{"item_id": "tags", "title": "x", "tags": 5}', "bad_field"),
    ('{"item_id": "surrogate", "title": "x\\udfff"}', "bad_field"),
    ('{"item_id": "nan", "title": NaN}', "bad_field"),
    ("{not json", "bad_row"),
]


@pytest.mark.slow
def test_a_run_over_hostile_rows_exits_0_and_reconciles(tmp_path):
    from jobs.cli import main
    from schemas.store import DeltaStore

    manifest, lake, summary = tmp_path / "m.jsonl", tmp_path / "lake", tmp_path / "summary.json"
    manifest.write_text("".join(line + "\n" for line, _ in RUN_ROWS))
    demo = ("--no-report", "--config", "configs/demo.yaml", "--summary-json", str(summary))
    assert main(run_argv(manifest, lake, *CHEAP, extra=demo)) == 0
    counts = json.loads(summary.read_text())
    assert (
        counts["items"]
        == len(RUN_ROWS)
        == counts["succeeded"] + counts["failed"] + counts["skipped"]
    )
    store = DeltaStore(lake)
    errors = {r["item_id"]: r for r in store.read("errors").to_pylist()}
    described = {r["item_id"]: r for r in store.read("descriptions").to_pylist()}
    expected_errors = {"nul", "tags", "surrogate", "nan", "m.jsonl#row-8"}
    assert set(errors) == expected_errors and set(described) == {"book", "film", "long-title"}
    assert {errors[i]["code"] for i in ("nul", "tags", "surrogate", "nan")} == {"bad_field"}
    assert errors["m.jsonl#row-8"]["code"] == "bad_row"
    assert all(row["stage"] == "manifest" for row in errors.values())
    assert described["long-title"]["prompt_truncated"] == ["title"]
    assert described["book"]["prompt_truncated"] == []


def test_a_data_uri_is_refused_as_a_scheme_not_a_missing_file(tmp_path):
    from core.config import MediaConfig
    from transforms.media import confine
    from transforms.stage import StageError

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"item_id": "d", "uri": "data:video/mp4;base64,AAAA"}) + "\n")
    [record] = read_input(manifest)
    assert record["uri"] == "data:video/mp4;base64,AAAA"  # kept as written, not a local path
    with pytest.raises(StageError) as refused:
        confine(record["uri"], MediaConfig())
    assert refused.value.code == "scheme_not_allowed"
