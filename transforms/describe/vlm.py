"""The ``transformers`` backend: any AutoModelForImageTextToText VLM, in process.

Frames go in as images through the processor's chat template (Qwen2.5-VL, SmolVLM2,
LLaVA-OneVision, ...). An item without media (text-only) gets the same prompt with no image.
Generation is batched with left padding; bf16 on CUDA with accelerate's ``device_map``, fp32
on CPU. A batch that runs out of accelerator memory is halved and retried; only a single item
that still does not fit is marked ``out_of_memory``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from transforms.describe.base import Describer, pick_frames, tokenizer_control_tokens
from transforms.describe.prompt import RenderedPrompt, is_text_only
from transforms.models import pick_device, resolve_model
from transforms.stage import Record, mark_error

logger = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def chat_messages(prompt: RenderedPrompt, image_count: int) -> list[dict]:
    """HF multimodal chat messages: the system text, then the images, then the user text."""
    content = [{"type": "image"} for _ in range(image_count)]
    content.append({"type": "text", "text": prompt.user})
    return [
        {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
        {"role": "user", "content": content},
    ]


class TransformersDescriber(Describer):
    backend = "transformers"

    def load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = resolve_model(self.config.model)
        self._device = pick_device(self.config.device)
        cuda = self._device == "cuda"
        self.use_processor(AutoProcessor.from_pretrained(path, revision=self.config.revision))
        self._model = AutoModelForImageTextToText.from_pretrained(
            path,
            revision=self.config.revision,
            dtype=torch.bfloat16 if cuda else torch.float32,
            device_map="auto" if cuda else None,
        ).eval()
        if not cuda:
            self._model.to(self._device)

    def use_processor(self, processor) -> None:
        """Pad on the left, and keep the tokenizer's control tokens out of item data."""
        processor.tokenizer.padding_side = "left"
        self._model_processor = processor
        self.control_tokens = tokenizer_control_tokens(processor.tokenizer)

    def chat_text(self, prompt: RenderedPrompt, image_count: int) -> str:
        """The chat-templated prompt text (image placeholders included), ending in the prefix."""
        messages = chat_messages(prompt, image_count)
        text = self._model_processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + prompt.answer_prefix

    def run_batch(self, records: list[Record]) -> None:
        audio_only = [r for r in records if not r.get("frames") and not is_text_only(r)]
        for record in audio_only:  # a clip with sound only: nothing for a VLM to look at
            mark_error(record, self.name, "describe_failed", "no frames to show the VLM")
        self._generate_halving([r for r in records if r.get("frames")])
        self._generate_halving([r for r in records if is_text_only(r)])  # prompts, no images

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
        """One batched ``generate`` over the records' frames and prompts."""
        import torch

        started = time.perf_counter()
        processor = self._model_processor
        prompts = [self.render(r) for r in records]
        images = [
            [
                Image.fromarray(np.asarray(f))
                for f in pick_frames(r["frames"], self.config.max_images)
            ]
            for r in records
        ]
        texts = [self.chat_text(p, len(imgs)) for p, imgs in zip(prompts, images, strict=True)]
        inputs = processor(
            text=texts, images=images if any(images) else None, padding=True, return_tensors="pt"
        ).to(self._model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        settings = self.generate_kwargs(processor.tokenizer.pad_token_id)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **settings)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        decoded = processor.batch_decode(new_tokens, skip_special_tokens=True)
        texts = [f"{p.answer_prefix} {text}" for p, text in zip(prompts, decoded, strict=True)]
        self.attach_generated(records, prompts, texts, inputs, output, started)
