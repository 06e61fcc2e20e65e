"""The pipeline as a plain list of stages, read top to bottom. Every engine runs this list."""

from __future__ import annotations

from transforms.config import Config
from transforms.describe import build_describer
from transforms.encode import EncodeStage
from transforms.media import MediaStage
from transforms.signals import AsrStage, OcrStage
from transforms.stage import Stage
from transforms.visual import VisualTagStage


def build_stages(config: Config) -> list[Stage]:
    """media → asr → ocr → visual → describe → encode; Semantic IDs run after (a global fit)."""
    stages = [
        MediaStage(config.media),
        AsrStage(config.asr),
        OcrStage(config.ocr),
        VisualTagStage(config.visual),
        build_describer(config.describe),
        EncodeStage(config.encode),
    ]
    for stage in stages:
        stage.retries = config.run.item_retries
        stage.timeout_s = config.run.stage_timeout_s.get(stage.name)
        stage.faults = config.run.faults.get(stage.name)
    return stages


def stage_fingerprints(stages: list[Stage]) -> dict[str, str]:
    return {stage.name: stage.fingerprint() for stage in stages}
