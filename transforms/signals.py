"""Signals: the speech transcript (ASR with faster-whisper) that helps the describer."""

from __future__ import annotations

import logging

import numpy as np

from transforms.config import AsrConfig
from transforms.models import model_revision, pick_device, resolve_model
from transforms.stage import Record, Stage, StageError

logger = logging.getLogger(__name__)


class AsrStage(Stage):
    """Transcribe each clip's audio; clips without audio get an empty transcript."""

    name = "asr"

    def __init__(self, config: AsrConfig):
        super().__init__(config, batch_size=config.batch_size)

    def fingerprint_fields(self) -> dict:
        c = self.config
        return {
            "enabled": c.enabled,
            "model": c.model,
            "revision": model_revision(c.model),
            "language": c.language,
            "beam_size": c.beam_size,
            "vad": c.vad_filter,
        }

    def load(self) -> None:
        if not self.config.enabled:
            return
        from faster_whisper import WhisperModel

        device = pick_device(self.config.device)
        compute_type = self.config.compute_type if device == "cpu" else "float16"
        self._model = WhisperModel(
            resolve_model(self.config.model),
            device=device,
            compute_type=compute_type,
            cpu_threads=2,
        )

    def process_item(self, record: Record) -> None:
        record.update(
            transcript="",
            transcript_language=None,
            asr_segments=[],
            asr_model=self.config.model if self.config.enabled else None,
        )
        audio = record.get("audio")
        if not self.config.enabled or audio is None or np.size(audio) == 0:
            return
        try:
            segments, info = self._model.transcribe(
                audio,
                language=self.config.language,
                beam_size=self.config.beam_size,
                vad_filter=self.config.vad_filter,
                condition_on_previous_text=False,
            )
            kept = [
                {
                    "start": round(s.start, 2),
                    "end": round(s.end, 2),
                    "text": s.text.strip(),
                    "avg_logprob": round(s.avg_logprob, 3),
                    "no_speech_prob": round(s.no_speech_prob, 3),
                }
                for s in segments
            ]
        except (RuntimeError, ValueError) as exc:
            raise StageError("asr_failed", f"{type(exc).__name__}: {exc}") from None
        record["asr_segments"] = kept
        record["transcript"] = " ".join(s["text"] for s in kept if s["text"]).strip()
        record["transcript_language"] = info.language if kept else None
