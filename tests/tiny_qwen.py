"""Tiny random-weight Qwen2.5-VL and Qwen2.5-Omni models built from configs, with word-level
tokenizers and processors built here (small image, video and audio front ends): the real
processor → chat template → generate path, offline.

transformers' video processors need torchvision, which does not load beside the CPU torch here
(see shared/OFFLINE.md), and without one a Qwen processor cannot even be constructed. So the
processors are built in memory, not loaded with AutoProcessor, around ``TorchVideoProcessor``:
Qwen2-VL's video front end (smart resize, CLIP normalisation, temporal padding, patchify, the
metadata contract) in plain torch. Everything past it (the Qwen processors' placeholder
expansion and ``second_per_grid_ts``, the feature extractor, the models) is transformers' own."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_vlm import word_level

# Qwen's chat layout, cut down: media items become one placeholder token each, which the
# processor expands to one token per patch (or audio frame).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|>{{ image }}<|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|>{{ video }}<|vision_end|>"
    "{% elif c['type'] == 'audio' %}<|audio_bos|>{{ audio }}<|audio_eos|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VL_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_token": "<|AUDIO|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
FRAME_PIXELS = {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}  # at most 4 x 4 patches
MEL_BINS = 16
# More plain words than control tokens, so random weights mostly generate words (a description
# must keep 20 characters once control tokens are dropped).
EXTRA_WORDS = [
    "dog",
    "bird",
    "car",
    "road",
    "tree",
    "sky",
    "sun",
    "rain",
    "snow",
    "river",
    "bridge",
    "house",
    "street",
    "light",
    "music",
    "song",
    "voice",
    "man",
    "woman",
    "child",
    "phone",
    "screen",
    "table",
    "chair",
    "window",
    "door",
    "water",
    "boat",
    "train",
    "bus",
    "bike",
    "ball",
    "game",
]


def chat_template(tokens: dict[str, str]) -> str:
    template = CHAT_TEMPLATE.replace("{{ image }}", tokens["image_token"])
    template = template.replace("{{ video }}", tokens["video_token"])
    return template.replace("{{ audio }}", tokens.get("audio_token", ""))


def tiny_tokenizer(tokens: dict[str, str]):
    """A word-level tokenizer over CORPUS with Qwen's control tokens and ``tokens`` as named
    special tokens (what the processors read as ``tokenizer.image_token`` and so on)."""
    from transformers import PreTrainedTokenizerFast

    controls = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    controls += ["<|audio_bos|>", "<|audio_eos|>"]
    specials = ["<unk>", "<|endoftext|>", *controls]
    specials += [t for t in tokens.values() if t not in specials]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level(specials, frozenset(EXTRA_WORDS)),
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=controls,
        extra_special_tokens=tokens,
    )
    tokenizer.chat_template = chat_template(tokens)
    return tokenizer


class TorchVideoProcessor:
    """Qwen2VLVideoProcessor's contract without torchvision: frames as given (sampling is
    refused, as transformers refuses it for a list of frames), each resized to a multiple of
    patch x merge within FRAME_PIXELS, normalised, padded to a multiple of the temporal patch
    by repeating the last frame, and cut into the same flat patches; metadata passes through."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]
    patch_size, merge_size, temporal_patch_size = 14, 2, 2

    def __call__(
        self,
        videos,
        video_metadata=None,
        do_sample_frames=False,
        return_metadata=False,
        return_tensors=None,
        **_,
    ):
        from transformers import BatchFeature
        from transformers.video_utils import make_batched_metadata, make_batched_videos

        if do_sample_frames:
            raise ValueError("frames are given; sampling them again is not supported")
        videos = make_batched_videos(videos)
        metadata = make_batched_metadata(videos, video_metadata=video_metadata)
        patches, grids = zip(*(self.patchify(self.normalised(v)) for v in videos), strict=True)
        data = {"pixel_values_videos": torch_cat(patches), "video_grid_thw": grids}
        if return_metadata:
            data["video_metadata"] = metadata
        return BatchFeature(
            data, tensor_type=return_tensors, skip_tensor_conversion=["video_metadata"]
        )

    def normalised(self, video):
        """(T, C, H', W') float frames, resized the way Qwen2-VL resizes them."""
        import numpy as np
        import torch
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        frames = torch.from_numpy(np.stack([np.asarray(f) for f in video])).permute(0, 3, 1, 2)
        height, width = smart_resize(
            frames.shape[2],
            frames.shape[3],
            factor=self.patch_size * self.merge_size,
            min_pixels=FRAME_PIXELS["shortest_edge"],
            max_pixels=FRAME_PIXELS["longest_edge"],
        )
        # as torchvision resizes uint8 frames on the CPU: torch's native uint8 antialiased
        # bicubic (a float resize differs by up to 19 levels when it enlarges)
        frames = torch.nn.functional.interpolate(
            frames, size=(height, width), mode="bicubic", align_corners=False, antialias=True
        )
        mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
        return (frames.float() / 255.0 - mean) / std

    def patchify(self, frames):
        """Qwen2VLVideoProcessor.patchify for one video: (patches, [grid_t, grid_h, grid_w])."""
        t, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        if pad := -frames.shape[0] % t:
            frames = torch_cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
        count, channels, height, width = frames.shape
        grid_t, grid_h, grid_w = count // t, height // p, width // p
        patches = frames.reshape(grid_t, t, channels, grid_h // m, m, p, grid_w // m, m, p)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        flat = patches.reshape(grid_t * grid_h * grid_w, channels * t * p * p)
        return flat, [grid_t, grid_h, grid_w]


def torch_cat(tensors):
    import torch

    return torch.cat(list(tensors), dim=0)


def vision_processors():
    """Qwen2-VL's image processor (its PIL backend) and the torch video front end, at a few
    patches per frame."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    image_processor = Qwen2VLImageProcessorPil(
        size=dict(FRAME_PIXELS), patch_size=14, merge_size=2, temporal_patch_size=2
    )
    return image_processor, TorchVideoProcessor()


def unchecked(processor_class):
    """``processor_class`` without its check that each part is a transformers class (the
    check needs the video processor registry, which needs torchvision)."""
    return type(
        processor_class.__name__,
        (processor_class,),
        {"check_argument_for_proper_class": lambda self, name, argument: type(argument)},
    )


def vision_settings(out_hidden_size: int) -> dict:
    return {
        "depth": 1,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": out_hidden_size,
        "fullatt_block_indexes": [0],
    }


def text_settings(tokenizer) -> dict:
    """Two layers of width 32; head_dim 16, so the M-RoPE sections (t, h, w) sum to 8."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
    }


def token_id(tokenizer, name: str) -> int:
    return tokenizer.convert_tokens_to_ids(getattr(tokenizer, name))


def qwen2_5_vl_processor():
    """A Qwen2.5-VL processor over the tiny tokenizer and the small vision front ends."""
    from transformers import Qwen2_5_VLProcessor

    tokenizer = tiny_tokenizer(VL_TOKENS)
    image_processor, video_processor = vision_processors()
    return unchecked(Qwen2_5_VLProcessor)(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def whisper_features():
    """A 16-mel Whisper feature extractor over 4 s windows: Omni's audio front end."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=MEL_BINS, sampling_rate=16000, chunk_length=4, return_attention_mask=True
    )


def qwen2_5_omni_processor():
    """A Qwen2.5-Omni processor: the small vision front ends and ``whisper_features``."""
    from transformers import Qwen2_5OmniProcessor

    tokenizer = tiny_tokenizer(OMNI_TOKENS)
    image_processor, video_processor = vision_processors()
    return unchecked(Qwen2_5OmniProcessor)(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=whisper_features(),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )


def vision_token_ids(tokenizer) -> dict[str, int]:
    """Qwen2.5-VL's config entries for the tokenizer's vision tokens."""
    return {
        "image_token_id": token_id(tokenizer, "image_token"),
        "video_token_id": token_id(tokenizer, "video_token"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }


def audio_settings(output_dim: int, width: int) -> dict:
    """A one-layer Whisper-style audio encoder of ``width`` over MEL_BINS mels."""
    return {
        "num_mel_bins": MEL_BINS,
        "encoder_layers": 1,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 2 * width,
        "d_model": width,
        "output_dim": output_dim,
        "n_window": 50,
    }


def omni_thinker(tokenizer, text: dict, vision: dict, audio: dict) -> dict:
    """Qwen2.5-Omni's thinker config: the three encoders and the tokenizer's media tokens."""
    return {
        "text_config": text,
        "vision_config": vision,
        "audio_config": audio,
        "audio_token_index": token_id(tokenizer, "audio_token"),
        "image_token_index": token_id(tokenizer, "image_token"),
        "video_token_index": token_id(tokenizer, "video_token"),
        "audio_start_token_id": tokenizer.convert_tokens_to_ids("<|audio_bos|>"),
        "audio_end_token_id": tokenizer.convert_tokens_to_ids("<|audio_eos|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        "user_token_id": tokenizer.convert_tokens_to_ids("<unk>"),
    }


def save_random(model_class, config, folder: Path) -> Path:
    """``model_class(config)`` with seeded random weights, saved to ``folder``."""
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    return folder


def build_tiny_qwen2_5_vl(folder: Path) -> Path:
    """Save a random-weight Qwen2.5-VL to ``folder``, with token ids of the tiny tokenizer."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_tokenizer(VL_TOKENS)
    config = Qwen2_5_VLConfig(
        text_config=text_settings(tokenizer),
        vision_config=vision_settings(out_hidden_size=32),
        **vision_token_ids(tokenizer),
    )
    return save_random(Qwen2_5_VLForConditionalGeneration, config, folder)


def build_tiny_qwen2_5_omni(folder: Path) -> Path:
    """Save a random-weight Qwen2.5-Omni to ``folder``, laid out like the hub checkpoint
    (model_type ``qwen2_5_omni``, thinker weights under ``thinker.``) but without the talker,
    which the describer never loads."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    tokenizer = tiny_tokenizer(OMNI_TOKENS)
    text = text_settings(tokenizer)
    width = text["hidden_size"]
    thinker = omni_thinker(
        tokenizer,
        text,
        vision_settings(out_hidden_size=width),
        audio_settings(output_dim=width, width=16),
    )
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    return save_random(Qwen2_5OmniForConditionalGeneration, config, folder)
