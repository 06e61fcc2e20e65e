"""Media bombs: small files that would decode to gigabytes. Each one, run through the media
stage (and the report's thumbnail path) in a child process, becomes its error row or a bounded
decode, with the child's peak RSS under a ceiling and in bounded time."""

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.infra import tree_rss_mb
from tests.media_factory import run_ffmpeg

pytestmark = pytest.mark.slow  # about 15 child processes, each importing the media stage
ROOT = Path(__file__).resolve().parents[1]
HEADROOM_MB = 500  # an item may cost this much above a child that has imported the media stage
CHILD_TIMEOUT_S = 120  # a bomb decoded whole took 77 s (1 h of AAC) or never finished (10 h)
POLL_S = 0.05

# The child: run one item through the media stage (or the report's thumbnail), then print
# what came out and its own peak RSS. (Its children's ru_maxrss is no use: a child spawned by
# fork or vfork inherits the parent's high-water mark, so run_child polls the whole tree.)
CHILD = """
import json, resource, sys
from core.config import MediaConfig
from transforms.media import MediaStage
from jobs.report import first_frame
uri, mode, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = MediaConfig(**settings)
out = {}
if mode == "media":
    [record] = MediaStage(config).process_batch([{"item_id": "bomb", "uri": uri}])
    out = {
        "code": (record.get("error") or {}).get("code"),
        "frame_shapes": [list(f.shape) for f in record.get("frames") or []],
        "timestamps": record.get("frame_timestamps_s"),
        "audio_s": None if record.get("audio") is None else record["audio"].size / 16000,
    }
elif mode == "thumbnail":
    frame, reason = first_frame(uri, "video", config)
    out = {"frame": bool(frame), "reason": reason}
out["self_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run_child(uri: str, mode: str, ceiling_mb: float = float("inf"), **settings) -> dict:
    """Run CHILD and return its output, its wall time and ``peak_mb``: the larger of its own
    peak RSS and the peak of its process tree's summed RSS (the child with its ffmpeg), polled.
    A watchdog kills it once the tree passes ``ceiling_mb``: a regression must fail this test,
    not the machine."""
    command = [sys.executable, "-c", CHILD, uri, mode, json.dumps(settings)]
    started, tree_peak = time.monotonic(), 0.0
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while child.poll() is None:
        tree_peak = max(tree_peak, tree_rss_mb(child.pid))
        if tree_peak > ceiling_mb or time.monotonic() - started > CHILD_TIMEOUT_S:
            child.kill()
            child.communicate()
            pytest.fail(f"{mode} of {Path(uri).name}: {tree_peak:.0f} MB or over the time limit")
        time.sleep(POLL_S)
    stdout, stderr = child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    peak = max(out["self_peak_mb"], tree_peak)
    return {**out, "peak_mb": peak, "s": time.monotonic() - started}


def huge_png(path: Path, width: int, height: int) -> Path:
    """A one-colour grey PNG of any size, written row by row: ~100 KB on disk for 100 MP."""
    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width  # filter byte, then the pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def png_in_mkv(folder: Path, name: str, width: int, height: int) -> Path:
    png = huge_png(folder / f"{name}.png", width, height)
    run_ffmpeg("-i", str(png), "-c", "copy", str(folder / f"{name}.mkv"))
    png.unlink()
    return folder / f"{name}.mkv"


@pytest.fixture(scope="session")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """The bombs, built in a few seconds: PNG frames of 6- and 7-digit sides, 1 and 10 hours
    of silent AAC, and 10 hours of a still picture with sound (the 10-hour files loop the
    1-hour ones without re-encoding)."""
    folder = tmp_path_factory.mktemp("bombs")
    audio_1h, still_1h = folder / "audio_1h.m4a", folder / "still_1h.mp4"
    silence = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:n=8192"]
    run_ffmpeg(*silence, "-t", "3600", "-c:a", "aac", "-b:a", "8k", str(audio_1h))
    run_ffmpeg(
        *["-f", "lavfi", "-i", "color=c=green:s=64x48:r=1", *silence, "-t", "3600"],
        *["-c:v", "libx264", "-preset", "ultrafast", "-g", "3600", "-pix_fmt", "yuv420p"],
        *["-c:a", "aac", "-b:a", "8k", str(still_1h)],
    )
    for one_hour, ten_hours in ((audio_1h, "audio_10h.m4a"), (still_1h, "still_10h.mp4")):
        run_ffmpeg("-stream_loop", "9", "-i", str(one_hour), "-c", "copy", str(folder / ten_hours))
    return {
        "frame_6_digits": png_in_mkv(folder, "frame_6_digits", 100_000, 1000),  # 100 MP
        "frame_7_digits": png_in_mkv(folder, "frame_7_digits", 1_000_000, 100),  # 100 MP
        "wide_under_limit": png_in_mkv(folder, "wide_under_limit", 200_000, 150),  # 30 MP
        "audio_1h": audio_1h,
        "audio_10h": folder / "audio_10h.m4a",
        "still_10h": folder / "still_10h.mp4",
    }


@pytest.fixture(scope="session")
def ceiling_mb(bombs) -> float:
    """A child that imported the media stage and the report, and decoded nothing, plus the
    headroom."""
    baseline = run_child(str(bombs["audio_1h"]), "baseline")["peak_mb"]
    return baseline + HEADROOM_MB


def test_the_bombs_are_small_files(bombs):
    assert all(path.stat().st_size < 4 << 20 for path in bombs.values())


@pytest.mark.parametrize("name", ["frame_6_digits", "frame_7_digits"])
def test_a_frame_over_max_pixels_is_refused_before_decoding(bombs, ceiling_mb, name):
    out = run_child(str(bombs[name]), "media", ceiling_mb)
    assert out["code"] == "frame_too_large"
    assert out["peak_mb"] < ceiling_mb and out["s"] < CHILD_TIMEOUT_S


def test_a_huge_side_under_max_pixels_is_decoded_scaled_to_max_side(bombs, ceiling_mb):
    out = run_child(str(bombs["wide_under_limit"]), "media", ceiling_mb, max_side=448)
    assert out["code"] is None
    assert out["frame_shapes"] and max(max(s[:2]) for s in out["frame_shapes"]) <= 448
    assert out["peak_mb"] < ceiling_mb


@pytest.mark.parametrize(
    ("name", "max_duration_s", "expected"),
    [
        ("audio_1h", 3600, None),  # at the default limit: decoded, only the first 900 s
        ("audio_10h", 3600, "too_long"),  # audio-only files are held to max_duration_s too
        ("audio_10h", 40_000, None),  # admitted: still only the first 900 s are decoded
        ("still_10h", 3600, "too_long"),
        ("still_10h", 40_000, None),
    ],
)
def test_long_audio_is_refused_or_decoded_in_a_window(
    bombs, ceiling_mb, name, max_duration_s, expected
):
    out = run_child(
        str(bombs[name]), "media", ceiling_mb, max_duration_s=max_duration_s, max_audio_s=900
    )
    assert out["code"] == expected
    if expected is None:
        assert out["audio_s"] == pytest.approx(900, abs=1)
    assert out["peak_mb"] < ceiling_mb and out["s"] < CHILD_TIMEOUT_S


def test_a_ten_hour_still_keeps_its_frame_times_inside_the_clip(bombs, ceiling_mb):
    out = run_child(str(bombs["still_10h"]), "media", ceiling_mb, max_duration_s=40_000)
    assert len(out["timestamps"]) == 8
    assert 0 < out["timestamps"][0] < out["timestamps"][-1] <= 36_000


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("frame_6_digits", "frame_too_large"),
        ("frame_7_digits", "frame_too_large"),
        ("still_10h", "too_long"),
    ],
)
def test_the_report_thumbnail_obeys_the_same_limits(bombs, ceiling_mb, name, reason):
    out = run_child(str(bombs[name]), "thumbnail", ceiling_mb)
    assert out["frame"] is False and out["reason"].startswith(reason)
    assert out["peak_mb"] < ceiling_mb and out["s"] < CHILD_TIMEOUT_S


def test_the_report_thumbnail_of_a_wide_frame_is_scaled(bombs, ceiling_mb):
    out = run_child(str(bombs["wide_under_limit"]), "thumbnail", ceiling_mb)
    assert out["frame"] is True and out["peak_mb"] < ceiling_mb


def test_one_run_over_hostile_rows_and_bombs_enriches_the_good_and_codes_the_bad(
    bombs, tmp_path, capsys
):
    """The issue's corpus in one ``enrich run``: bad manifest rows, media bombs, a title with
    terminal escapes. Exit 0; every bad row or file is one errors row with a registered code;
    items in = enriched + failed + skipped; nothing raw reaches the terminal."""
    from core.errors import ERROR_CODES
    from jobs.cli import main
    from schemas.store import DeltaStore
    from tests.cli_helpers import run_argv
    from tests.test_hostile_rows import CHEAP, RUN_ROWS

    media = {  # bomb → expected error code (None: enriched, bounded)
        "frame_6_digits": "frame_too_large",
        "frame_7_digits": "frame_too_large",
        "audio_10h": "too_long",
        "still_10h": "too_long",
        "audio_1h": None,
        "wide_under_limit": None,
    }
    rows = [line for line, _ in RUN_ROWS]
    rows += [json.dumps({"item_id": name, "uri": str(bombs[name])}) for name in media]
    rows.append(json.dumps({"item_id": "esc\x1b[2J", "title": "t\x1b]0;owned\x07", "text": "x"}))
    manifest, lake, summary = tmp_path / "m.jsonl", tmp_path / "lake", tmp_path / "s.json"
    manifest.write_text("".join(row + "\n" for row in rows))
    demo = ("--no-report", "--config", "configs/demo.yaml", "--summary-json", str(summary))
    roots = json.dumps([str(tmp_path), str(bombs["audio_1h"].parent)])
    assert main(run_argv(manifest, lake, *CHEAP, f"media.allowed_roots={roots}", extra=demo)) == 0
    counts = json.loads(summary.read_text())
    assert (
        counts["items"] == len(rows) == counts["succeeded"] + counts["failed"] + counts["skipped"]
    )
    store = DeltaStore(lake)
    errors = {r["item_id"]: r["code"] for r in store.read("errors").to_pylist()}
    described = set(store.read("descriptions").column("item_id").to_pylist())
    expected_bad = {i: c for i, c in media.items() if c} | {
        item_id: code
        for item_id, code in zip(
            ["nul", "tags", "surrogate", "nan", "m.jsonl#row-8"],
            ["bad_field", "bad_field", "bad_field", "bad_field", "bad_row"],
            strict=True,
        )
    }
    assert errors == expected_bad and set(errors.values()) <= set(ERROR_CODES)
    assert {i for i, c in media.items() if c is None} | {"esc\x1b[2J"} <= described
    assert len(described) + len(errors) == len(rows)
    assert "\x1b" not in capsys.readouterr().out
