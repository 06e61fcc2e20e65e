"""The offline describer: grounded sentences from the clip's evidence, plus what a small text
LLM writes that the evidence supports.

The LLM never sees the pixels: it reads the transcript, OCR text, metadata (title, tags and the
manifest's text), frame statistics and the visual tags of an ImageNet classifier. An item
without media is described from its metadata alone. Its sentences are kept only when their
content words are supported by that evidence (``describe.min_sentence_grounding``); the rest
of the text is stated from the evidence by templates. With ``append_signals`` the description
ends with the quoted text, transcript and on-screen text, so the embedding carries what was
written, said and shown.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from transforms.describe.base import Describer, tidy_description, tokenizer_control_tokens
from transforms.describe.grounding import (
    evidence_vocabulary,
    grounded_sentences,
    opening_sentence,
    template_sentences,
)
from transforms.describe.prompt import RenderedPrompt
from transforms.models import cache_dir, pick_device, resolve_model
from transforms.stage import Record, stable_hash

logger = logging.getLogger(__name__)
QUOTE_CHARS = 300


def load_causal_lm(model_path: str, gguf_file: str | None, revision: str | None = None):
    """Load tokenizer + model; a GGUF file is de-quantized once and cached as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = loadable_path(model_path, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, revision=revision)
    return tokenizer, model


def loadable_path(model_path: str, gguf_file: str | None) -> str:
    """The folder transformers loads: ``model_path``, or its GGUF file's cached conversion."""
    return str(_cached_gguf_conversion(model_path, gguf_file)) if gguf_file else model_path


def _cached_gguf_conversion(model_path: str, gguf_file: str) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(model_path) / gguf_file
    if not source.is_file():
        raise FileNotFoundError(f"describe.gguf_file {gguf_file} not found in {model_path}")
    stat = source.stat()
    target = cache_dir() / "gguf" / stable_hash([str(source), stat.st_size, stat.st_mtime_ns])
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to safetensors once (cached at %s)", source.name, target)
    tokenizer = AutoTokenizer.from_pretrained(model_path, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(model_path, gguf_file=gguf_file)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), strict=False)
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another worker finished the same conversion first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def grounded_description(record: Record, generated: str, minimum: float) -> str:
    """The opening from the evidence, the generated sentences it supports, the evidence's
    other facts, in that order."""
    kept = grounded_sentences(generated, evidence_vocabulary(record), minimum)
    return " ".join([opening_sentence(record), *kept, *template_sentences(record)])


def signals_sentence(record: Record) -> str:
    """The grounded tail: the item's text and what was said and shown, quoted, never
    paraphrased."""
    parts = []
    if text := (record.get("text") or "").strip():
        parts.append(f'Text: "{text[:QUOTE_CHARS]}".')
    if transcript := (record.get("transcript") or "").strip():
        parts.append(f'Speech: "{transcript[:QUOTE_CHARS]}".')
    if ocr := (record.get("ocr_text") or "").strip():
        parts.append(f'On-screen text: "{ocr[:QUOTE_CHARS]}".')
    return " ".join(parts)


class OfflineDescriber(Describer):
    """Batched greedy generation with left padding, from fenced prompt facts."""

    backend = "offline"

    def load(self) -> None:
        import torch

        tokenizer, self._model = load_causal_lm(
            resolve_model(self.config.model), self.config.gguf_file, self.config.revision
        )
        self.use_tokenizer(tokenizer)
        self._device = pick_device(self.config.device)
        dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
        self._model.to(self._device, dtype=dtype).eval()

    def use_tokenizer(self, tokenizer) -> None:
        """Pad on the left, and keep the tokenizer's control tokens out of item data."""
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model_tokenizer = tokenizer
        self.control_tokens = tokenizer_control_tokens(tokenizer)

    def chat_text(self, prompt: RenderedPrompt) -> str:
        """The chat-templated prompt text, ending in the answer prefix."""
        messages = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        text = self._model_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + prompt.answer_prefix

    def run_batch(self, records: list[Record]) -> None:
        import torch

        started = time.perf_counter()
        tokenizer = self._model_tokenizer
        prompts = [self.render(r) for r in records]
        inputs = tokenizer(
            [self.chat_text(p) for p in prompts], return_tensors="pt", padding=True
        ).to(self._device)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **self.generate_kwargs(tokenizer.pad_token_id))
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = []
        for record, prompt, tokens in zip(records, prompts, new_tokens, strict=True):
            generated = tidy_description(
                prompt.answer_prefix + " " + tokenizer.decode(tokens, skip_special_tokens=True)
            )
            prose = grounded_description(record, generated, self.config.min_sentence_grounding)
            texts.append(
                f"{prose} {signals_sentence(record)}" if self.config.append_signals else prose
            )
        self.attach_generated(records, prompts, texts, inputs, output, started)
