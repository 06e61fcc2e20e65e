"""Records as a run hands them to the describer when ASR, audio events, OCR and visual tags are
off: the real disabled stages add their (empty) fields, so a describer test needs no
hand-written fields."""

from core.config import AsrConfig, AudioConfig, OcrConfig, VisualConfig
from transforms.audio import AudioEventStage
from transforms.signals import AsrStage, OcrStage
from transforms.visual import VisualTagStage


def without_signals(records: list[dict]) -> list[dict]:
    for stage in (
        AsrStage(AsrConfig(enabled=False)),
        AudioEventStage(AudioConfig(enabled=False)),
        OcrStage(OcrConfig(enabled=False)),
        VisualTagStage(VisualConfig(enabled=False)),
    ):
        records = stage.process_batch(records)
    return records
