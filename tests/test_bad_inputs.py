"""A bad-input corpus through the real pipeline: every bad item is one coded error row,
every good item in the same run still lands."""

import json
import random
import subprocess

import pytest
from deltalake import DeltaTable

from jobs.cli import main
from jobs.demo_media import package_dir
from schemas.store import delta_to_arrow
from tests.media_factory import corrupt_audio_clip, run_ffmpeg, synth_video

pytestmark = pytest.mark.slow
SIZE_LIMIT_MB = 5


def build_corpus(root):
    """item_id → (uri, expected error code or None for success)."""
    root.mkdir()
    outside = root.parent / "outside.mp4"
    synth_video(outside, seconds=1)
    good = synth_video(root / "good.mp4", seconds=3)
    plain = synth_video(root / "plain.mp4", seconds=3)
    faststart = synth_video(root / "faststart.mp4", seconds=3, faststart=True)
    (root / "truncated.mp4").write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    (root / "truncated_faststart.mp4").write_bytes(
        faststart.read_bytes()[: faststart.stat().st_size // 2]
    )
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(random.Random(7).randbytes(200_000))  # seeded: no flakes
    (root / "notes.txt").write_text("just some text, not a video\n" * 100)
    (root / "folder.mp4").mkdir()
    (root / "huge.mp4").write_bytes(good.read_bytes() + b"\0" * (SIZE_LIMIT_MB << 20))
    hello = package_dir("pytest_audioeval") / "samples" / "audio" / "en" / "hello_world.wav"
    run_ffmpeg("-i", str(hello), "-c:a", "aac", str(root / "audio_only.m4a"))
    synth_video(root / "video_only.mp4", seconds=2, audio=False)
    synth_video(root / "uhd.mp4", seconds=1, size="3840x2160", audio=False)
    synth_video(root / "clip with spaces ünïcødé 視頻.mp4", seconds=2)
    corrupt_audio_clip(root / "corrupt_audio.mkv")
    corpus = {
        "good": (good, None),
        "truncated": (root / "truncated.mp4", "truncated"),
        "truncated_faststart": (root / "truncated_faststart.mp4", "truncated"),
        "empty": (root / "empty.mp4", "empty_file"),
        "random_bytes": (root / "random.mp4", "not_a_video"),
        "text_file": (root / "notes.txt", "not_a_video"),
        "directory": (root / "folder.mp4", "not_a_file"),
        "over_size_limit": (root / "huge.mp4", "too_large"),
        "missing": (root / "missing.mp4", "not_found"),
        "outside_root": (outside, "path_not_allowed"),
        "dot_dot": ("../outside.mp4", "path_not_allowed"),
        "etc_passwd": ("/etc/passwd", "path_not_allowed"),
        "audio_only": (root / "audio_only.m4a", None),
        "video_only": (root / "video_only.mp4", None),
        "uhd_4k": (root / "uhd.mp4", None),
        "unicode_path": (root / "clip with spaces ünïcødé 視頻.mp4", None),
        "corrupt_audio": (root / "corrupt_audio.mkv", None),
    }
    try:
        synth_video(root / "av1.mkv", seconds=1, audio=False, codec="libaom-av1")
        corpus["av1_codec"] = (root / "av1.mkv", "unsupported_codec")
    except subprocess.CalledProcessError:
        pass  # this ffmpeg cannot encode AV1; the other kinds still run
    return corpus


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    corpus = build_corpus(base / "corpus")
    manifest = base / "corpus" / "manifest.jsonl"
    manifest.write_text(
        "".join(json.dumps({"item_id": k, "uri": str(v[0])}) + "\n" for k, v in corpus.items())
    )
    lake = base / "lake"
    argv = [
        "run",
        "--input",
        str(manifest),
        "--lake",
        str(lake),
        "--config",
        "configs/demo.yaml",
        "--set",
        f"media.max_file_mb={SIZE_LIMIT_MB}",
        "--set",
        "describe.max_new_tokens=12",
        "--set",
        "ocr.max_frames=1",
        "--set",
        "media.batch_size=32",
        "--set",
        "run.max_error_rate=1.0",  # a corpus of mostly bad inputs, on purpose
        "--set",
        "visual.enabled=false",  # decoding and error rows, not picture tags
    ]
    assert main(argv) == 0
    return corpus, *(
        rows_by_item(lake / name) for name in ("errors", "descriptions", "semantic_ids")
    )


def rows_by_item(path):
    return {r["item_id"]: r for r in delta_to_arrow(DeltaTable(str(path))).to_pylist()}


def test_the_corpus_has_at_least_twelve_kinds(bad_run):
    corpus, *_ = bad_run
    assert len(corpus) >= 16


def test_each_bad_item_is_exactly_one_error_row_with_the_right_code(bad_run):
    corpus, errors, _, _ = bad_run
    expected = {item: code for item, (_, code) in corpus.items() if code}
    assert {item: row["code"] for item, row in errors.items()} == expected
    for row in errors.values():
        assert row["stage"] == "media" and row["message"] and row["run_id"]


def test_every_good_item_in_the_same_run_lands(bad_run):
    corpus, _, descriptions, sids = bad_run
    good = {item for item, (_, code) in corpus.items() if code is None}
    assert set(descriptions) == good and set(sids) == good


def test_audio_only_file_gets_a_transcript_and_no_frames(bad_run):
    _, _, descriptions, _ = bad_run
    row = descriptions["audio_only"]
    assert row["media_kind"] == "audio" and row["frames_sampled"] == 0 and row["has_audio"]
    assert "hello" in row["transcript"].lower()


def test_video_only_uhd_unicode_and_corrupt_audio_succeed(bad_run):
    _, _, descriptions, _ = bad_run
    assert descriptions["video_only"]["has_audio"] is False
    assert (descriptions["uhd_4k"]["width"], descriptions["uhd_4k"]["height"]) == (3840, 2160)
    assert descriptions["unicode_path"]["frames_sampled"] == 8
    assert descriptions["corrupt_audio"]["audio_codec"] == "ac3"
    assert descriptions["corrupt_audio"]["has_audio"] is True
