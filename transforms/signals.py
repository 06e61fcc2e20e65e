"""Signals the describer leans on: the speech transcript (ASR) and on-screen text (OCR)."""

from __future__ import annotations

import logging
import os
import re
from difflib import SequenceMatcher

import numpy as np

from core.config import AsrConfig, OcrConfig
from transforms.models import model_revision, pick_device, resolve_model
from transforms.stage import Record, Stage, StageError

logger = logging.getLogger(__name__)
NEAR_DUPLICATE_RATIO = 0.85
WORD_GAP_RATIO = 1.3  # a character pitch this much above the line's median is a word space


# -- ASR ---------------------------------------------------------------------------------------
def speech_seconds(audio: np.ndarray, sample_rate: int) -> float:
    """Seconds of speech that Silero VAD (shipped with faster-whisper) finds in ``audio``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    spans = get_speech_timestamps(audio, VadOptions(), sampling_rate=sample_rate)
    return sum(span["end"] - span["start"] for span in spans) / sample_rate


class AsrStage(Stage):
    """Transcribe each clip's speech; no audio or no speech gives an empty transcript."""

    name = "asr"
    needs = frozenset({"audio"})
    adds = frozenset(
        {"transcript", "transcript_language", "transcript_segments", "speech_s", "asr_model"}
    )

    def __init__(self, config: AsrConfig):
        super().__init__(config, batch_size=config.batch_size)

    def fingerprint_fields(self) -> dict:
        return {"revision": model_revision(self.config.model), "temperature": 0.0}

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
            cpu_threads=min(4, os.cpu_count() or 1),
        )

    def process_item(self, record: Record) -> None:
        record.update(
            transcript="",
            transcript_language=None,
            transcript_segments=[],
            speech_s=None,
            asr_model=self.config.model if self.config.enabled else None,
        )
        audio = record.get("audio")
        if not self.config.enabled or audio is None or np.size(audio) == 0:
            return
        if self.config.vad_filter:
            record["speech_s"] = round(speech_seconds(audio, 16000), 2)
            if record["speech_s"] == 0:
                return  # no speech: skip the model entirely
        try:
            segments, info = self._model.transcribe(
                audio,
                language=self.config.language,
                beam_size=self.config.beam_size,
                vad_filter=self.config.vad_filter,
                condition_on_previous_text=False,
                temperature=0.0,  # no sampling fallback: the same audio gives the same text
                no_speech_threshold=self.config.no_speech_threshold,
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
        record["transcript_segments"] = kept
        record["transcript"] = " ".join(s["text"] for s in kept if s["text"]).strip()
        record["transcript_language"] = info.language if kept else None


# -- OCR ---------------------------------------------------------------------------------------
def _normalized(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def spaced_line(text: str, char_boxes: list, chars: list[str]) -> str:
    """Put back the spaces PP-OCR drops: split where the pitch between character boxes (centre
    to centre) exceeds ``WORD_GAP_RATIO`` times the line's median pitch."""
    if " " in text or len(chars) < 3 or len(chars) != len(char_boxes) or "".join(chars) != text:
        return text
    centres = [(box[0][0] + box[1][0]) / 2 for box in char_boxes]
    pitches = np.diff(centres)
    limit = WORD_GAP_RATIO * float(np.median(pitches))
    out = chars[0]
    for char, pitch in zip(chars[1:], pitches, strict=True):
        out += (" " if pitch > limit else "") + char
    return out


def line_text(result: list) -> str:
    """One RapidOCR result row (box, text, score[, char boxes, chars, char scores]) as text
    with its word spaces."""
    text = str(result[1]).strip()
    if len(result) >= 5 and result[3] and result[4]:
        return spaced_line(text, result[3], [str(c) for c in result[4]])
    return text


def merge_ocr_lines(lines: list[dict], max_lines: int) -> list[dict]:
    """De-duplicate lines seen across frames (exact or near-identical), keeping the best score."""
    kept: list[dict] = []
    for line in sorted(lines, key=lambda x: (x["t"], -x["score"])):
        key = _normalized(line["text"])
        twin = next(
            (
                k
                for k in kept
                if SequenceMatcher(None, _normalized(k["text"]), key).ratio()
                >= NEAR_DUPLICATE_RATIO
            ),
            None,
        )
        if twin is None:
            kept.append(dict(line))
        elif line["score"] > twin["score"]:
            twin.update(text=line["text"], score=line["score"])
    return kept[:max_lines]


class OcrStage(Stage):
    """RapidOCR (PP-OCR ONNX) on a few sampled frames; confident, de-duplicated lines."""

    name = "ocr"
    needs = frozenset({"frames", "frame_timestamps_s"})
    adds = frozenset({"ocr_text", "ocr_lines"})

    def __init__(self, config: OcrConfig):
        super().__init__(config, batch_size=config.batch_size)

    def fingerprint_fields(self) -> dict:
        return {
            "engine": model_revision("pypi:rapidocr_onnxruntime"),
            "word_gap_ratio": WORD_GAP_RATIO,
        }

    def load(self) -> None:
        if self.config.enabled:
            from rapidocr_onnxruntime import RapidOCR

            self._model = RapidOCR()

    def process_item(self, record: Record) -> None:
        record.update(ocr_text="", ocr_lines=[])
        frames = record.get("frames") or []
        if not self.config.enabled or not frames:
            return
        timestamps = record.get("frame_timestamps_s") or [0.0] * len(frames)
        picks = np.unique(
            np.linspace(0, len(frames) - 1, self.config.max_frames).round().astype(int)
        )
        found = []
        for index in picks:
            try:
                result, _ = self._model(
                    np.ascontiguousarray(frames[index][..., ::-1]),  # RGB → BGR
                    return_word_box=True,
                )
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises plain exceptions
                raise StageError("ocr_failed", f"{type(exc).__name__}: {exc}") from None
            for row in result or []:
                text, score = line_text(row), row[2]
                if (
                    float(score) >= self.config.min_confidence
                    and len(text) >= self.config.min_chars
                ):
                    found.append(
                        {"text": text, "score": round(float(score), 3), "t": timestamps[index]}
                    )
        record["ocr_lines"] = merge_ocr_lines(found, self.config.max_lines)
        record["ocr_text"] = " | ".join(line["text"] for line in record["ocr_lines"])
