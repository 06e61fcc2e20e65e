"""The pipeline as a plain list of stages, read top to bottom. Every engine runs this list."""

from __future__ import annotations

from core.config import Config
from transforms.audio import AudioEventStage
from transforms.describe import Describer, build_describer
from transforms.encode import EncodeStage
from transforms.faults import FaultInjector
from transforms.manifest import RECORD_FIELDS
from transforms.media import FETCHED_FIELDS, MediaStage
from transforms.signals import AsrStage, OcrStage
from transforms.stage import Stage, StageRuntime
from transforms.visual import VisualTagStage


def build_stages(config: Config, task_attempt: int = 0) -> list[Stage]:
    """media → asr → audio → ocr → visual → describe → encode; Semantic IDs run after (a
    global fit). ``task_attempt`` (which try of its engine task this is) matters only to
    injected faults."""

    def runtime(name: str) -> StageRuntime:
        spec = config.run.faults.get(name)
        return StageRuntime(
            retries=config.run.item_retries,
            timeout_s=config.run.stage_timeout_s.get(name),
            faults=FaultInjector(spec, task_attempt) if spec is not None else None,
        )

    return [
        MediaStage(config.media, runtime(MediaStage.name)),
        AsrStage(config.asr, runtime(AsrStage.name)),
        AudioEventStage(config.audio, runtime(AudioEventStage.name)),
        OcrStage(config.ocr, runtime(OcrStage.name)),
        VisualTagStage(config.visual, runtime(VisualTagStage.name)),
        build_describer(config.describe, runtime(Describer.name)),
        EncodeStage(config.encode, runtime(EncodeStage.name)),
    ]


# What a record holds before the first stage: the input's fields, what ``fetch_input`` adds
# while hashing, and the run's ``pipeline_fingerprint`` (set by ``pipelines.tasks``).
INPUT_FIELDS = frozenset({*RECORD_FIELDS, *FETCHED_FIELDS, "pipeline_fingerprint"})


def unproduced_fields(stages: list[Stage], wanted: set[str] | frozenset[str] = frozenset()):
    """Why the chain cannot work: each field a stage ``needs`` (or, at the end, ``wanted``)
    that neither the input nor an earlier stage ``adds``. Empty: every field is produced."""
    produced, problems = set(INPUT_FIELDS), []
    for stage in stages:
        problems += [
            f"{stage.name} needs {field!r}, which no earlier stage adds"
            for field in sorted(stage.needs - produced)
        ]
        produced |= stage.adds
    problems += [
        f"{field!r} is read but no stage adds it" for field in sorted(set(wanted) - produced)
    ]
    return problems


def stage_fingerprints(stages: list[Stage]) -> dict[str, str]:
    return {stage.name: stage.fingerprint() for stage in stages}
