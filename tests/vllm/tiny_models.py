"""Tiny random-weight Qwen2.5-VL and Qwen2.5-Omni checkpoints that a real vLLM serves.

Run in the vLLM venv (its transformers and the torchvision that loads there), not in .venv:

    .venv-vllm/bin/python -m tests.vllm.tiny_models {qwen2_5_vl,qwen2_5_omni} DIR

Each folder holds a config, saved random weights (about a megabyte), the tokenizer with Qwen's
control tokens, a chat template, and transformers' real image, video (and for Omni, audio)
processors: the same files a hub checkpoint has, at toy sizes. The sizes are the smallest vLLM's
CPU kernels take: a text head of 64 (M-RoPE sections 8 + 12 + 12 = 32 = 64 / 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.tiny_qwen import (
    FRAME_PIXELS,
    OMNI_TOKENS,
    VL_TOKENS,
    audio_settings,
    omni_thinker,
    save_random,
    tiny_tokenizer,
    vision_token_ids,
    whisper_features,
)

TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    # as long as the documented --max-model-len (32768 for Omni), so the serve commands run as
    # the docs give them
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "mrope_section": [8, 12, 12]},
    "bos_token_id": None,
}
VISION = {
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 2,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "fullatt_block_indexes": [1],
}


def served_tokenizer(tokens: dict[str, str]):
    """The tiny tokenizer with every control token an added special token: transformers 5 drops
    ``additional_special_tokens`` when saving, and vLLM must split them out of prompts and skip
    them when decoding."""
    tokenizer = tiny_tokenizer(tokens)
    vocab = tokenizer.get_vocab()
    controls = [t for t in vocab if t.startswith("<") and t.endswith(">")]
    tokenizer.add_tokens(sorted(controls, key=vocab.get), special_tokens=True)
    return tokenizer


def text_config(tokenizer) -> dict:
    return {
        **TEXT,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def vision_processors():
    """transformers' real Qwen2-VL image and video processors, at a few patches a frame."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = {"size": dict(FRAME_PIXELS), "patch_size": 14, "merge_size": 2}
    return (
        Qwen2VLImageProcessor(**sizes, temporal_patch_size=2),
        Qwen2VLVideoProcessor(**sizes, temporal_patch_size=2),
    )


def build_qwen2_5_vl(folder: Path) -> Path:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    tokenizer = served_tokenizer(VL_TOKENS)
    config = Qwen2_5_VLConfig(
        text_config=text_config(tokenizer),
        vision_config={**VISION, "out_hidden_size": TEXT["hidden_size"]},
        tie_word_embeddings=False,
        **vision_token_ids(tokenizer),
    )
    save_random(Qwen2_5_VLForConditionalGeneration, config, folder)
    save_processor(Qwen2_5_VLProcessor, tokenizer, folder)
    return folder


def build_qwen2_5_omni(folder: Path) -> Path:
    """Laid out like the hub checkpoint (model_type ``qwen2_5_omni``, thinker weights under
    ``thinker.``), without the talker: vLLM serves the thinker, text out."""
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniProcessor,
    )

    tokenizer = served_tokenizer(OMNI_TOKENS)
    width = TEXT["hidden_size"]
    thinker = omni_thinker(
        tokenizer,
        {**text_config(tokenizer), "tie_word_embeddings": False},
        {**VISION, "out_hidden_size": width},
        audio_settings(output_dim=width, width=32),
    )
    config = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    save_random(Qwen2_5OmniForConditionalGeneration, config, folder)
    save_processor(Qwen2_5OmniProcessor, tokenizer, folder, feature_extractor=whisper_features())
    return folder


def save_processor(processor_class, tokenizer, folder: Path, **front_ends) -> None:
    """The checkpoint's processor: the real vision processors, ``front_ends``, the tokenizer
    and its chat template."""
    image_processor, video_processor = vision_processors()
    processor_class(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
        **front_ends,
    ).save_pretrained(folder)


BUILDERS = {"qwen2_5_vl": build_qwen2_5_vl, "qwen2_5_omni": build_qwen2_5_omni}

if __name__ == "__main__":
    kind, target = sys.argv[1:3]
    print(BUILDERS[kind](Path(target)))
