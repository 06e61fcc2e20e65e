"""The offline describer: a small text LLM writes the description from the clip's signals.

It is *not* visual understanding: it sees the transcript, the metadata and frame statistics
(brightness, motion, colours), never the pixels. Use a VLM backend for real descriptions.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from transforms.config import DescribeConfig
from transforms.describe.prompt import RenderedPrompt, item_facts, load_prompt
from transforms.models import cache_dir, model_revision, pick_device, resolve_model
from transforms.stage import Record, Stage, StageError, stable_hash

logger = logging.getLogger(__name__)
MAX_SENTENCES = 6
MIN_DESCRIPTION_CHARS = 20


def load_causal_lm(model_path: str, gguf_file: str | None):
    """Load tokenizer + model; a GGUF file is de-quantized once and cached as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file:
        model_path = str(_cached_gguf_conversion(model_path, gguf_file))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    return tokenizer, model


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


def tidy_description(text: str) -> str:
    """Collapse whitespace, drop a trailing half sentence, keep at most MAX_SENTENCES."""
    text = re.sub(r"\s+", " ", text).strip()
    sentences = re.findall(r"[^.!?]+[.!?]+", text)
    if sentences:
        text = " ".join(s.strip() for s in sentences[:MAX_SENTENCES])
    return text


class OfflineDescriber(Stage):
    """Batched greedy generation with left padding, from fenced prompt facts."""

    name = "describe"
    resources = "gpu"

    def __init__(self, config: DescribeConfig):
        super().__init__(config, batch_size=config.batch_size)
        self.prompt = load_prompt(config.prompt_version)

    def fingerprint_fields(self) -> dict:
        c = self.config
        return {
            "backend": c.backend,
            "model": c.model,
            "gguf": c.gguf_file,
            "revision": model_revision(c.model),
            "prompt_version": c.prompt_version,
            "prompt_sha": self.prompt.sha,
            "max_new_tokens": c.max_new_tokens,
            "temperature": c.temperature,
            "repetition_penalty": c.repetition_penalty,
            "seed": c.seed,
            "max_transcript_chars": c.max_transcript_chars,
        }

    def load(self) -> None:
        import torch

        self._model_tokenizer, self._model = load_causal_lm(
            resolve_model(self.config.model), self.config.gguf_file
        )
        self._model_tokenizer.padding_side = "left"
        if self._model_tokenizer.pad_token is None:
            self._model_tokenizer.pad_token = self._model_tokenizer.eos_token
        self._device = pick_device(self.config.device)
        dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
        self._model.to(self._device, dtype=dtype).eval()

    def render(self, record: Record) -> RenderedPrompt:
        return self.prompt.render(item_facts(record, self.config.max_transcript_chars))

    def chat_text(self, prompt: RenderedPrompt) -> str:
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

        tokenizer = self._model_tokenizer
        prompts = [self.render(r) for r in records]
        inputs = tokenizer(
            [self.chat_text(p) for p in prompts], return_tensors="pt", padding=True
        ).to(self._device)
        sampling = self.config.temperature > 0
        torch.manual_seed(self.config.seed)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=self.config.max_new_tokens,
                do_sample=sampling,
                temperature=self.config.temperature if sampling else None,
                top_p=None,
                top_k=None,
                repetition_penalty=self.config.repetition_penalty,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        for record, prompt, tokens in zip(records, prompts, new_tokens, strict=True):
            text = prompt.answer_prefix + " " + tokenizer.decode(tokens, skip_special_tokens=True)
            count = int((tokens != tokenizer.pad_token_id).sum())
            record["prompt_rendered_sha"] = prompt.sha
            self._guard_item(record, self._attach, record, text, count)

    def _attach(self, record: Record, raw: str, token_count: int) -> None:
        description = tidy_description(raw)
        if len(description) < MIN_DESCRIPTION_CHARS:
            raise StageError("describe_failed", f"describer returned {len(description)} chars")
        record.update(
            description=description,
            description_tokens=token_count,
            describer=self.config.model,
            describer_revision=model_revision(self.config.model),
            prompt_version=self.prompt.version,
            prompt_sha=self.prompt.sha,
        )
