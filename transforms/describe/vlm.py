"""The ``transformers`` backend: any AutoModelForImageTextToText VLM, in process.

Frames go in through the processor's chat template (Qwen2.5-VL, SmolVLM2, LLaVA-OneVision, ...):
as separate images (``describe.video_input: frames``), or as one video with the frames'
timestamps (``video``; ``auto`` = video when the processor has a video processor). An omni
model (Qwen2.5-Omni, whose text-generating thinker is loaded without its speech talker) also
hears the 16 kHz waveform (``describe.audio_input: audio``; ``auto`` = audio when the processor
has a feature extractor), so a clip with sound and no picture is described too. An item without
media (text-only) gets the same prompt with no image.
Generation is batched with left padding; bf16 on CUDA with accelerate's ``device_map``, fp32
on CPU. A batch that runs out of accelerator memory is halved and retried; only a single item
that still does not fit is marked ``out_of_memory``.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from core.errors import UsageError
from transforms.describe.base import (
    Describer,
    ShownInputs,
    pick_frames,
    tokenizer_control_tokens,
)
from transforms.describe.prompt import RenderedPrompt, is_text_only
from transforms.models import pick_device, resolve_model
from transforms.stage import Record, StageError, isolate, mark_error

logger = logging.getLogger(__name__)

# Omni checkpoints whose full model also speaks: only the text-generating thinker is loaded,
# from the ``thinker.`` weights of the checkpoint (the talker's are left on disk).
THINKERS = {
    "qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration",
}
# Float inputs that follow the model's dtype (bf16 on CUDA).
PIXEL_INPUTS = ("pixel_values", "pixel_values_videos", "input_features")
# Frames without a source frame rate are placed on a millisecond timeline instead.
MILLISECOND_RATE = 1000.0


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def chat_messages(
    prompt: RenderedPrompt, image_count: int, *, video: bool = False, audio: bool = False
) -> list[dict]:
    """HF multimodal chat messages: the system text, then the video or the images, the audio,
    then the user text."""
    content = [{"type": "video"}] if video else []
    content += [{"type": "image"} for _ in range(image_count)]
    content += [{"type": "audio"}] if audio else []
    content.append({"type": "text", "text": prompt.user})
    return [
        {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
        {"role": "user", "content": content},
    ]


def video_input_mode(configured: str, processor: Any) -> str:
    """``describe.video_input`` for this processor: auto = video when it has a video processor."""
    has_video = getattr(processor, "video_processor", None) is not None
    if configured == "auto":
        return "video" if has_video else "frames"
    if configured == "video" and not has_video:
        raise UsageError("describe.video_input is video, but the model's processor takes no video")
    return configured


def audio_input_mode(configured: str, processor: Any) -> str:
    """``describe.audio_input`` for this processor: auto = audio when it has a feature extractor
    (or an audio processor)."""
    hears = any(
        getattr(processor, part, None) is not None
        for part in ("feature_extractor", "audio_processor")
    )
    if configured == "auto":
        return "audio" if hears else "transcript"
    if configured == "audio" and not hears:
        raise UsageError("describe.audio_input is audio, but the model's processor takes no audio")
    return configured


def audio_keyword(processor: Any) -> str:
    """The processor's name for its audio argument (``audio`` in transformers 5, ``audios`` in
    some older processors)."""
    parameters = inspect.signature(processor.__call__).parameters
    return "audios" if "audios" in parameters and "audio" not in parameters else "audio"


def picked_timestamps(record: Record, limit: int) -> list[float]:
    """The times (s) of the frames ``pick_frames`` picks: the same positions in
    ``frame_timestamps_s``, which the media stage writes one per sampled frame."""
    frames, times = record.get("frames") or [], record.get("frame_timestamps_s") or []
    if len(times) != len(frames):
        raise StageError(
            "describe_failed", f"{len(frames)} frames but {len(times)} frame timestamps"
        )
    return [float(t) for t in pick_frames(times, limit)]


def video_timeline(
    timestamps: list[float], fps: float | None, frame_count: int | None, duration: float | None
):
    """The picked frames as transformers' ``VideoMetadata``: their indices in the source at its
    frame rate (a millisecond timeline when the rate is unknown), so ``.timestamps`` gives their
    times back (Qwen3-VL and SmolVLM2 write them into the prompt) and ``.sampled_fps`` is the
    rate they were sampled at (Qwen2.5-VL: second_per_grid_ts = temporal patch / sampled_fps)."""
    from transformers.video_utils import VideoMetadata

    known_rate = bool(fps and fps > 0)
    rate = float(fps) if known_rate else MILLISECOND_RATE
    indices = [round(t * rate) for t in timestamps]
    if known_rate and frame_count:
        total = int(frame_count)
    else:
        total = round(duration * rate) if duration else 0
    return VideoMetadata(
        total_num_frames=max(total, indices[-1] + 1),
        fps=rate,
        duration=duration or max(total, indices[-1] + 1) / rate,
        frames_indices=indices,
    )


@dataclass(frozen=True)
class ItemMedia:
    """What one item shows the model: frames as separate images, or as one video on its
    timeline; and its waveform when the model hears audio."""

    images: list
    video: np.ndarray | None = None
    timeline: Any = None
    audio: np.ndarray | None = None

    @property
    def frame_count(self) -> int:
        return len(self.images) if self.video is None else len(self.video)

    @property
    def kind(self) -> tuple[str, bool]:
        """How its picture goes in (video, frames, none) and whether its sound does."""
        picture = "video" if self.video is not None else "frames" if self.images else "none"
        return picture, self.audio is not None

    def shown(self) -> ShownInputs:
        picture, hears = self.kind
        return ShownInputs(picture, "audio" if hears else "transcript", self.frame_count)


class TransformersDescriber(Describer):
    backend = "transformers"
    # Settled by use_processor at load; until then an item is taken as it always was.
    video_mode, audio_mode, _audio_keyword = "frames", "transcript", "audio"

    def load(self) -> None:
        path = resolve_model(self.config.model)
        self._device = pick_device(self.config.device)
        self.use_processor(self.load_processor(path))
        self._model = self.load_model(path).eval()
        if self._device != "cuda":
            self._model.to(self._device)

    def load_processor(self, path: str) -> Any:
        """The model's processor (tokenizer, image / video processors, feature extractor)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, revision=self.config.revision)

    def load_model(self, path: str) -> Any:
        """AutoModelForImageTextToText, or an omni checkpoint's thinker (``THINKERS``)."""
        import torch
        import transformers

        cuda = self._device == "cuda"
        settings = {
            "revision": self.config.revision,
            "dtype": torch.bfloat16 if cuda else torch.float32,
            "device_map": "auto" if cuda else None,
        }
        config = transformers.AutoConfig.from_pretrained(path, revision=self.config.revision)
        if thinker := THINKERS.get(config.model_type):
            return getattr(transformers, thinker).from_pretrained(
                path, config=config.thinker_config, key_mapping={r"^thinker\.": ""}, **settings
            )
        return transformers.AutoModelForImageTextToText.from_pretrained(path, **settings)

    def use_processor(self, processor) -> None:
        """Pad on the left, keep the tokenizer's control tokens out of item data, and settle
        the input modes (``auto``) for what this processor takes."""
        processor.tokenizer.padding_side = "left"
        self._model_processor = processor
        self.control_tokens = tokenizer_control_tokens(processor.tokenizer)
        self.video_mode = video_input_mode(self.config.video_input, processor)
        self.audio_mode = audio_input_mode(self.config.audio_input, processor)
        self._audio_keyword = audio_keyword(processor)

    def chat_text(
        self,
        prompt: RenderedPrompt,
        image_count: int = 0,
        *,
        video: bool = False,
        audio: bool = False,
    ) -> str:
        """The chat-templated prompt text (media placeholders included), ending in the prefix."""
        messages = chat_messages(prompt, image_count, video=video, audio=audio)
        text = self._model_processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + prompt.answer_prefix

    def item_media(self, record: Record) -> ItemMedia:
        """What ``record`` shows the model in the settled modes (``use_processor``)."""
        frames = pick_frames(record.get("frames") or [], self.config.max_images)
        audio = record.get("audio")
        hears = self.audio_mode == "audio" and audio is not None and np.size(audio) > 0
        audio = np.asarray(audio, dtype=np.float32) if hears else None
        if not frames or self.video_mode != "video":
            return ItemMedia(images=frames, audio=audio)
        timeline = video_timeline(
            picked_timestamps(record, self.config.max_images),
            record.get("fps"),
            record.get("frame_count"),
            record.get("duration_s"),
        )
        video = np.stack([np.asarray(f) for f in frames])
        return ItemMedia(images=[], video=video, timeline=timeline, audio=audio)

    def shown_inputs(self, record: Record) -> ShownInputs:
        return self.item_media(record).shown()

    def run_batch(self, records: list[Record]) -> None:
        groups: dict[tuple[str, bool], list[Record]] = {}
        for record in records:
            isolate(record, self.name, self._group, record, groups)
        for group in groups.values():
            self._generate_halving(group)

    def _group(self, record: Record, groups: dict[tuple[str, bool], list[Record]]) -> None:
        """File ``record`` under what it shows (one processor call takes one kind), or refuse
        a clip that has nothing this model can take."""
        kind = self.item_media(record).kind
        if kind == ("none", False) and not is_text_only(record):
            # a clip with sound only, and a model that cannot hear: nothing to look at
            raise StageError("describe_failed", "no frames to show the VLM")
        groups.setdefault(kind, []).append(record)

    def _generate_halving(self, records: list[Record]) -> None:
        """Generate; on out-of-memory split the batch in two and retry each half."""
        if not records:
            return
        try:
            self.generate(records)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled here
            if not is_out_of_memory(exc):
                raise
            self._free_cache()
            if len(records) == 1:
                mark_error(records[0], self.name, "out_of_memory", f"batch size 1: {exc}"[:500])
                return
            half = len(records) // 2
            logger.warning(
                "describe: out of memory at batch %d, retrying as %d + %d",
                len(records),
                half,
                len(records) - half,
            )
            self._generate_halving(records[:half])
            self._generate_halving(records[half:])

    def _free_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, records: list[Record]) -> None:
        """One batched ``generate`` over the records' media and prompts."""
        import torch

        started = time.perf_counter()
        processor = self._model_processor
        prompts = [self.render(r) for r in records]
        media = [self.item_media(r) for r in records]
        texts = [
            self.chat_text(p, len(m.images), video=m.video is not None, audio=m.audio is not None)
            for p, m in zip(prompts, media, strict=True)
        ]
        inputs = processor(
            text=texts, **self.media_inputs(media), padding=True, return_tensors="pt"
        )
        self.place_video_in_time(inputs, media)
        inputs = inputs.to(self._model.device)
        for key in PIXEL_INPUTS:
            if key in inputs and inputs[key].is_floating_point():
                inputs[key] = inputs[key].to(self._model.dtype)
        settings = self.generate_kwargs(processor.tokenizer.pad_token_id)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **settings)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        decoded = processor.batch_decode(new_tokens, skip_special_tokens=True)
        texts = [f"{p.answer_prefix} {text}" for p, text in zip(prompts, decoded, strict=True)]
        self.attach_generated(records, prompts, texts, inputs, output, started)

    def media_inputs(self, media: list[ItemMedia]) -> dict[str, Any]:
        """The processor's media arguments: images per item (as before video input existed),
        one video per item that shows one (frames as given, not sampled again, with their
        timeline), one waveform per item that is heard."""
        images = [[Image.fromarray(np.asarray(f)) for f in m.images] for m in media]
        arguments: dict[str, Any] = {"images": images if any(images) else None}
        if shown := [m for m in media if m.video is not None]:
            arguments["videos"] = [m.video for m in shown]
            arguments["video_metadata"] = [m.timeline for m in shown]
            arguments["do_sample_frames"] = False
        if heard := [m.audio for m in media if m.audio is not None]:
            arguments[self._audio_keyword] = heard
        return arguments

    def place_video_in_time(self, inputs: Any, media: list[ItemMedia]) -> None:
        """Qwen2.5-Omni's processor spaces every video's temporal grid by one ``fps`` argument
        (default 2) instead of each video's metadata; set each from its own sampled rate, as
        Qwen2.5-VL's processor does (only rotary positions read it: token counts stay)."""
        if "video_second_per_grid" not in inputs:
            return
        import torch

        patch = self._model_processor.video_processor.temporal_patch_size
        rates = [m.timeline.sampled_fps for m in media if m.video is not None]
        inputs["video_second_per_grid"] = torch.tensor([patch / rate for rate in rates])
