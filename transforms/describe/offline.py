"""The offline describer: grounded sentences from the clip's evidence, plus what a small text
LLM writes that the evidence supports and the evidence text does not already say.

The text is stated from the evidence by templates: an opening from the title and visual tags,
one sentence of picture, shots, length and audio, and with ``append_signals`` the quoted text,
transcript and on-screen text, so the embedding carries what was written, said and shown. An
item without media is described from its metadata alone.

With ``describe.generated_sentences`` > 0 a small LLM (it never sees the pixels: it reads the
same facts) may add sentences. One is kept only when its content words are supported by the
evidence (``describe.min_sentence_grounding``) and it names evidence the template text does
not. An item whose evidence is all stated already is not sent to the model: nothing it wrote
could be kept. Each item is generated alone, so its text never depends on its batch-mates
(left padding changes greedy tokens). The default is 0 (no model load): SmolLM2-135M's
sentences were measured never to pass the filter (bench/results/describe.json).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from core.hashing import stable_hash
from transforms.describe.base import (
    MAX_SENTENCES,
    Describer,
    ShownInputs,
    generated_length,
    tidy_description,
    tokenizer_control_tokens,
)
from transforms.describe.grounding import (
    evidence_vocabulary,
    grounded_sentences,
    opening_sentence,
    quoted,
    sentences,
    template_sentences,
    unstated_evidence,
)
from transforms.describe.prompt import RenderedPrompt
from transforms.models import cache_dir, pick_device, resolve_model
from transforms.stage import Record

logger = logging.getLogger(__name__)
QUOTE_CHARS = 300
# How the text is put together; bump when the same evidence and model give different text.
# 2: quote-safe sentences; generation opt-in, per item, kept only when it adds evidence.
COMPOSITION_VERSION = 4  # 3: a long title is cut in the opening; 4: the sound from audio events


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


def grounded_description(
    record: Record, generated: str, minimum: float, *, append_signals: bool = True, limit: int = 2
) -> str:
    """The opening from the evidence, the generated sentences it supports that add to the
    evidence text, the evidence's other facts, and (``append_signals``) the quoted signals."""
    stated = evidence_description(record, append_signals=append_signals)
    kept = grounded_sentences(
        generated,
        evidence_vocabulary(record),
        minimum,
        adds=unstated_evidence(record, stated),
        limit=limit,
    )
    return evidence_description(record, kept, append_signals=append_signals)


def evidence_description(
    record: Record, generated: list[str] = (), *, append_signals: bool = True
) -> str:
    """The text stated from the evidence, with ``generated`` sentences after the opening."""
    parts = [opening_sentence(record), *generated, *template_sentences(record)]
    if append_signals:
        parts.append(signals_sentence(record))
    return " ".join(p for p in parts if p)


def signals_sentence(record: Record) -> str:
    """The grounded tail: the item's text and what was said and shown, quoted, never
    paraphrased."""
    parts = []
    if text := (record.get("text") or "").strip():
        parts.append(f"Text: {quoted(text[:QUOTE_CHARS])}.")
    if transcript := (record.get("transcript") or "").strip():
        parts.append(f"Speech: {quoted(transcript[:QUOTE_CHARS])}.")
    if ocr := (record.get("ocr_text") or "").strip():
        parts.append(f"On-screen text: {quoted(ocr[:QUOTE_CHARS])}.")
    return " ".join(parts)


class OfflineDescriber(Describer):
    """Evidence text, plus grounded sentences of a small LLM (greedy, one item per call)."""

    backend = "offline"

    def load(self) -> None:
        if not self.config.generated_sentences:  # nothing will be generated: no model
            self._model = None
            return
        import torch

        tokenizer, self._model = load_causal_lm(
            resolve_model(self.config.model), self.config.gguf_file, self.config.revision
        )
        self.use_tokenizer(tokenizer)
        self._device = pick_device(self.config.device)
        dtype = torch.bfloat16 if self._device == "cuda" else torch.float32
        self._model.to(self._device, dtype=dtype).eval()

    def input_fingerprint(self) -> dict[str, str]:
        return {}  # it never sees pixels nor hears the waveform: the input modes do not apply

    def shown_inputs(self, record: Record) -> ShownInputs:
        return ShownInputs("none", "transcript", 0)

    def fingerprint_fields(self) -> dict:
        return {
            **super().fingerprint_fields(),
            "composition": COMPOSITION_VERSION,
        }

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

    def process_item(self, record: Record) -> None:
        """Describe one item; the model runs only when a sentence of it could be kept."""
        started = time.perf_counter()
        prompt = self.render(record)
        append = self.config.append_signals
        stated = evidence_description(record, append_signals=append)
        # Generated sentences fill only the room tidy_description's cap leaves the quotes.
        room = min(self.config.generated_sentences, MAX_SENTENCES - len(sentences(stated)))
        generated, prompt_tokens, new_tokens = "", 0, 0
        if room > 0 and getattr(self, "_model", None) and unstated_evidence(record, stated):
            generated, prompt_tokens, new_tokens = self.generate(prompt)
        minimum = self.config.min_sentence_grounding
        text = (
            grounded_description(record, generated, minimum, append_signals=append, limit=room)
            if generated
            else stated
        )
        self.attach(
            record,
            prompt,
            text,
            prompt_tokens=prompt_tokens,
            completion_tokens=new_tokens,
            started=started,
        )

    def generate(self, prompt: RenderedPrompt) -> tuple[str, int, int]:
        """Greedy text for one prompt (no padding, so no batch-mate changes it), with its
        prompt and new-token counts."""
        import torch

        tokenizer = self._model_tokenizer
        inputs = tokenizer([self.chat_text(prompt)], return_tensors="pt").to(self._device)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **self.generate_kwargs(tokenizer.pad_token_id))
        tokens = output[0, inputs["input_ids"].shape[1] :]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        eos = self._model.generation_config.eos_token_id
        return (
            tidy_description(f"{prompt.answer_prefix} {text}"),
            inputs["input_ids"].shape[1],
            generated_length(tokens, eos),
        )
