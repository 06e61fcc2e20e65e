"""Manifests are read exactly as written: ids and titles keep their characters (no type
inference, no replaced bytes, no line split inside a JSON string), file:// URIs mean local
files only, and item ids are Unicode NFC so one id typed two ways is one item."""

import json
import re
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from schemas.store import DeltaStore
from tests.cli_helpers import QUICK, run_argv
from tests.media_factory import synth_video
from transforms.manifest import ManifestError, plan_input, read_input, read_task_input

CAFE_NFC = "caf\u00e9"
CAFE_NFD = unicodedata.normalize("NFD", CAFE_NFC)
ODD_TITLE = "line\u2028sep\u2029para\x85next"
FAST = ("media.num_frames=2", "describe.max_new_tokens=16")
WITH_TAGS = tuple(s for s in QUICK if not s.startswith("visual."))  # the visual stage runs


def enrich(manifest, lake) -> int:
    return main(run_argv(manifest, lake, *FAST, quick=WITH_TAGS, extra=("--no-report",)))


def table(lake, name) -> dict[str, dict]:
    return {row["item_id"]: row for row in DeltaStore(str(lake)).read(name).to_pylist()}


def ids_of(path) -> list[str]:
    return [record["item_id"] for record in read_input(path)]


# -- CSV: every cell is the string written; only an empty cell is absent ------------------------
CSV_ROWS = [  # item_id, title (None: an empty cell)
    ("007", "NA"),
    ("0042", "null"),
    ("12345678901234567890", "N/A"),
    ("7", None),
    ("8", "nan"),
]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv-exact")
    lines = ["item_id,uri,title"]
    for number, (item_id, title) in enumerate(CSV_ROWS):
        synth_video(folder / f"c{number}.mp4", seconds=1)
        lines.append(f"{item_id},c{number}.mp4,{title or ''}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    code = enrich(folder / "m.csv", folder / "lake")
    return code, folder / "lake"


def test_csv_ids_and_titles_land_exactly_as_written(csv_run):
    code, lake = csv_run
    assert code == 0
    rows = table(lake, "descriptions")
    assert {item: row["title"] for item, row in rows.items()} == dict(CSV_ROWS)


def test_csv_cells_are_strings_and_only_an_empty_cell_is_absent(tmp_path):
    (tmp_path / "m.csv").write_text(
        "item_id,uri,title\n007,a.mp4,NA\n0042,b.mp4,null\n12345678901234567890,c.mp4,N/A\n"
        '7,d.mp4,\n8,e.mp4,""\n9,f.mp4,nan\n10,g.mp4,None\n1e3,h.mp4, padded \n'
    )
    records = read_input(tmp_path / "m.csv")
    assert [(r["item_id"], r["title"]) for r in records] == [
        ("007", "NA"),
        ("0042", "null"),
        ("12345678901234567890", "N/A"),
        ("7", None),
        ("8", None),
        ("9", "nan"),
        ("10", "None"),
        ("1e3", " padded "),
    ]


def test_csv_with_007_and_7_is_two_items(tmp_path):
    (tmp_path / "m.csv").write_text("item_id,uri\n007,a.mp4\n7,b.mp4\n")
    assert ids_of(tmp_path / "m.csv") == ["007", "7"]


# -- JSONL and Parquet: ids are strings or integers ---------------------------------------------
def test_integer_ids_become_their_digits(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"item_id": 7, "uri": "a"}\n{"item_id": 0, "uri": "b"}\n'
        '{"item_id": 12345678901234567890, "uri": "c"}\n{"item_id": "007", "uri": "d"}\n'
    )
    assert ids_of(tmp_path / "m.jsonl") == ["7", "0", "12345678901234567890", "007"]
    pq.write_table(pa.table({"item_id": [7, 42], "uri": ["a", "b"]}), tmp_path / "m.parquet")
    assert ids_of(tmp_path / "m.parquet") == ["7", "42"]


@pytest.mark.parametrize("value", ["7.0", "1e19", "true", "[7]", '{"id": 7}', "NaN"])
def test_a_jsonl_id_that_is_not_a_string_or_integer_is_an_error_record(tmp_path, value):
    (tmp_path / "m.jsonl").write_text(
        f'{{"item_id": "ok", "uri": "a"}}\n{{"item_id": {value}, "uri": "b"}}\n'
    )
    good, bad = read_input(tmp_path / "m.jsonl")
    assert good["item_id"] == "ok" and "error" not in good
    assert (bad["item_id"], bad["error"]["code"]) == ("m.jsonl#row-2", "bad_field")
    assert re.search(r"row 2: item_id .* write it as a string", bad["error"]["message"])


def test_a_parquet_float_id_column_leaves_no_usable_row_and_fails_fast(tmp_path):
    pq.write_table(pa.table({"item_id": [7.0, 8.0], "uri": ["a", "b"]}), tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"row 1: item_id 7\.0 is a float"):
        read_input(tmp_path / "m.parquet")


# -- JSONL: split on \n only, bytes decoded strictly --------------------------------------------
def test_jsonl_titles_keep_unicode_line_separators_and_crlf_lines_read(tmp_path):
    rows = [{"item_id": f"i{n}", "uri": f"c{n}.mp4", "title": f"{ODD_TITLE}{n}"} for n in range(5)]
    body = "\r\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\r\n"
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode())  # with a UTF-8 BOM
    records = read_input(tmp_path / "m.jsonl")
    assert [(r["item_id"], r["title"]) for r in records] == [
        (row["item_id"], row["title"]) for row in rows
    ]
    tasks = plan_input(str(tmp_path / "m.jsonl"), items_per_task=2)
    assert [r["item_id"] for s in tasks for r in read_task_input(s)] == [r["item_id"] for r in rows]


def test_a_jsonl_line_that_is_not_utf8_is_an_error_record_naming_the_line(tmp_path):
    (tmp_path / "m.jsonl").write_bytes(
        b'{"item_id": "a", "uri": "a"}\n{"item_id": "b\xe9", "uri": "b"}\n'
    )
    _, bad = read_input(tmp_path / "m.jsonl")
    assert bad["item_id"] == "m.jsonl#row-2"
    assert "m.jsonl row 2: not UTF-8" in bad["error"]["message"]


def test_a_lone_unicode_separator_line_is_an_error_not_a_skipped_row(tmp_path):
    """The planner's byte offsets and the reader agree on which lines are rows."""
    (tmp_path / "m.jsonl").write_text('{"item_id": "a", "uri": "a"}\n\x85\n', encoding="utf-8")
    _, bad = read_input(tmp_path / "m.jsonl")
    assert "m.jsonl row 2: not valid JSON" in bad["error"]["message"]


# -- Unicode NFC ---------------------------------------------------------------------------------
def test_an_nfd_id_is_stored_nfc_and_the_uri_keeps_its_bytes(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"item_id": CAFE_NFD, "uri": f"{CAFE_NFD}.mp4"}, ensure_ascii=False) + "\n"
    )
    [record] = read_input(tmp_path / "m.jsonl")
    assert record["item_id"] == CAFE_NFC
    assert record["uri"] == str(tmp_path / f"{CAFE_NFD}.mp4")


def test_ids_equal_after_nfc_fail_fast_naming_both_rows(tmp_path, caplog):
    (tmp_path / "m.csv").write_text(
        f"item_id,uri\nother,x.mp4\n{CAFE_NFC},a.mp4\n{CAFE_NFD},b.mp4\n", encoding="utf-8"
    )
    with pytest.raises(ManifestError) as caught:
        read_input(tmp_path / "m.csv")
    message = str(caught.value)
    assert "row 2" in message and "row 3" in message and "NFC normalization" in message
    assert "caf\\xe9" in message and "cafe\\u0301" in message  # the two spellings, visibly
    assert "NFC normalization" in caplog.text


def test_a_media_folder_with_an_nfd_file_name_gives_an_nfc_id(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{CAFE_NFD}.mp4").write_bytes(b"x")
    [record] = read_input(tmp_path)
    assert record["item_id"] == f"sub/{CAFE_NFC}.mp4"
    assert record["uri"] == str(tmp_path / "sub" / f"{CAFE_NFD}.mp4")


def test_a_media_folder_with_both_spellings_of_a_name_fails_fast(tmp_path):
    (tmp_path / f"{CAFE_NFC}.mp4").write_bytes(b"x")
    (tmp_path / f"{CAFE_NFD}.mp4").write_bytes(b"y")
    with pytest.raises(ManifestError, match="same id .* after Unicode NFC normalization"):
        read_input(tmp_path)


def test_nfc_and_nfd_ids_in_one_manifest_exit_2(tmp_path, capsys):
    rows = [{"item_id": CAFE_NFC, "uri": "a.mp4"}, {"item_id": CAFE_NFD, "uri": "b.mp4"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert enrich(tmp_path / "m.jsonl", tmp_path / "lake") == 2
    assert "same id 'café' after Unicode NFC normalization" in capsys.readouterr().err


# -- file:// URIs ------------------------------------------------------------------------------
def test_file_uris_are_kept_as_uris_and_other_hosts_are_refused(tmp_path):
    from core import storage

    (tmp_path / "m.jsonl").write_text(
        f'{{"item_id": "single", "uri": "file:{tmp_path}/a%20b.mp4"}}\n'
        f'{{"item_id": "upper", "uri": "FILE://{tmp_path}/x.mp4"}}\n'
    )
    records = read_input(tmp_path / "m.jsonl")
    assert [r["uri"] for r in records] == [f"file:{tmp_path}/a%20b.mp4", f"FILE://{tmp_path}/x.mp4"]
    assert storage.local_path(records[0]["uri"]) == tmp_path / "a b.mp4"
    assert storage.local_path(f"file://LOCALHOST{tmp_path}/x.mp4") == tmp_path / "x.mp4"
    with pytest.raises(storage.StorageError, match="otherhost"):
        storage.local_path(records[1]["uri"].replace("FILE://", "FILE://otherhost"))


def test_an_input_on_another_host_fails_fast(tmp_path):
    with pytest.raises(ManifestError, match="otherhost"):
        read_input(f"file://otherhost{tmp_path}/m.jsonl")


# -- one JSONL run: odd titles, file:// URIs, an NFD id ------------------------------------------
@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jsonl-exact")
    for name in ("odd.mp4", "a b.mp4", "host.mp4", "nfd.mp4"):
        synth_video(folder / name, seconds=1)
    rows = [
        {"item_id": "odd", "uri": "odd.mp4", "title": ODD_TITLE},
        {"item_id": "encoded", "uri": f"file://{folder}/a%20b.mp4"},
        {"item_id": "host", "uri": f"file://otherhost{folder}/host.mp4"},
        {"item_id": CAFE_NFD, "uri": "nfd.mp4"},
    ]
    manifest = folder / "m.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    code = enrich(manifest, folder / "lake")
    return code, folder, table(folder / "lake", "descriptions"), table(folder / "lake", "errors")


def test_jsonl_title_with_unicode_separators_is_stored_byte_exact(jsonl_run):
    code, _, descriptions, _ = jsonl_run
    assert code == 0
    assert descriptions["odd"]["title"].encode() == ODD_TITLE.encode()


def test_a_percent_encoded_file_uri_is_enriched(jsonl_run):
    _, folder, descriptions, errors = jsonl_run
    assert "encoded" in descriptions and "encoded" not in errors
    assert descriptions["encoded"]["frames_sampled"] == 2


def test_a_file_uri_naming_another_host_is_an_error_row_and_never_read(jsonl_run):
    _, _, descriptions, errors = jsonl_run
    assert "host" not in descriptions
    row = errors["host"]
    assert (row["stage"], row["code"]) == ("media", "path_not_allowed")
    assert "otherhost" in row["message"] and "another machine" in row["message"]
    assert row["content_sha256"] is None  # the local file of the same path was not read


def test_an_nfd_manifest_id_is_stored_nfc(jsonl_run):
    _, _, descriptions, _ = jsonl_run
    assert CAFE_NFC in descriptions and CAFE_NFD not in descriptions
