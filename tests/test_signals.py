"""ASR and OCR recover known speech and on-screen text from real synthesized clips."""

import re

import numpy as np
import pytest

from core.config import AsrConfig, MediaConfig, OcrConfig
from jobs.demo_media import package_dir
from tests.media_factory import run_ffmpeg, speech_clip
from transforms.media import MediaStage
from transforms.signals import AsrStage, OcrStage, merge_ocr_lines

pytestmark = pytest.mark.slow
SPEECH = "the weather is sunny and warm today in the city park"
ON_SCREEN = "BIG SUMMER SALE"
MAX_WER = 0.2  # Whisper tiny.en on clean read speech, numbers normalized


NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}


def words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def normalized_words(text):
    """Number words → digits, and runs of digits joined ("1-2-345" and "one two three four
    five" both become "12345"), so Whisper's number formatting is not counted as errors."""
    tokens, merged = [NUMBERS.get(w, w) for w in words(text)], []
    for token in tokens:
        if merged and token.isdigit() and merged[-1].isdigit():
            merged[-1] += token
        else:
            merged.append(token)
    return merged


def word_error_rate(reference, hypothesis):
    ref, hyp = normalized_words(reference), normalized_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


@pytest.fixture(scope="module")
def stages():
    return MediaStage(MediaConfig()), AsrStage(AsrConfig()), OcrStage(OcrConfig())


def enrich(stages, records):
    for stage in stages:
        stage.process_batch(records)
    return records


def test_asr_and_ocr_recover_the_known_speech_and_text(stages, tmp_path):
    clip = speech_clip(tmp_path / "speech.mp4", SPEECH, ON_SCREEN)
    [record] = enrich(stages, [{"item_id": "s", "uri": str(clip)}])
    assert "error" not in record
    heard = set(words(record["transcript"]))
    assert len(heard & set(words(SPEECH))) / len(set(words(SPEECH))) >= 0.6, record["transcript"]
    seen = " ".join(line["text"] for line in record["ocr_lines"]).upper()
    assert sum(word in seen for word in ON_SCREEN.split()) >= 2, seen
    assert len(record["ocr_lines"]) <= 3  # the same line on every frame is kept once
    segment = record["transcript_segments"][0]
    assert 0 <= segment["start"] < segment["end"] and segment["avg_logprob"] < 0
    assert record["transcript_language"] == "en" and record["speech_s"] > 1


def test_tiny_en_word_error_rate_on_the_audioeval_english_wavs(stages):
    folder = package_dir("pytest_audioeval") / "samples" / "audio" / "en"
    wavs = sorted(folder.glob("*.wav"))
    records = enrich(stages, [{"item_id": w.stem, "uri": str(w)} for w in wavs])
    rates = []
    for wav, record in zip(wavs, records, strict=True):
        assert record["media_kind"] == "audio" and record["frames_sampled"] == 0
        rates.append(word_error_rate(wav.with_suffix(".txt").read_text(), record["transcript"]))
    assert len(rates) >= 3 and float(np.mean(rates)) <= MAX_WER, rates


def test_silence_skips_asr_entirely(stages, tmp_path):
    clip = tmp_path / "silent.mp4"
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=44100:cl=mono",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(clip),
    )
    [record] = enrich(stages, [{"item_id": "quiet", "uri": str(clip)}])
    assert record["has_audio"] is True
    assert (
        record["speech_s"] == 0
        and record["transcript"] == ""
        and record["transcript_segments"] == []
    )


def test_word_error_rate_normalizes_numbers():
    assert word_error_rate("One two three four five.", "1-2-345.") == 0
    assert word_error_rate("the lazy dog", "the dog") == 1 / 3


def test_ocr_lines_are_deduplicated_across_frames_keeping_the_best():
    lines = [
        {"text": "BIG SUMMER SALE", "score": 0.91, "t": 0.0},
        {"text": "BIG SUMMER SALE", "score": 0.97, "t": 1.0},
        {"text": "BIG SUMMERSALE", "score": 0.99, "t": 2.0},
        {"text": "50% OFF", "score": 0.9, "t": 2.0},
    ]
    merged = merge_ocr_lines(lines, max_lines=10)
    assert [m["text"] for m in merged] == ["BIG SUMMERSALE", "50% OFF"]
    assert merged[0]["score"] == 0.99 and merged[0]["t"] == 0.0
