"""The pipeline as a plain list of stages, read top to bottom. Every engine runs this list."""

from __future__ import annotations

from core.config import Config
from transforms.audio import AudioEventStage
from transforms.describe import describer_class
from transforms.encode import EncodeStage
from transforms.faults import FaultInjector
from transforms.manifest import RECORD_FIELDS
from transforms.media import FETCHED_FIELDS, MediaStage
from transforms.runner import StagePolicy
from transforms.signals import AsrStage, OcrStage
from transforms.stage import Stage
from transforms.visual import VisualTagStage


def stage_classes(config: Config) -> list[type[Stage]]:
    """media → asr → audio → ocr → visual → describe → encode; Semantic IDs run after (a
    global fit). Each stage's settings are the config section of its name."""
    return [
        MediaStage,
        AsrStage,
        AudioEventStage,
        OcrStage,
        VisualTagStage,
        describer_class(config.describe),
        EncodeStage,
    ]


def build_stages(config: Config) -> list[Stage]:
    """The stages, built (cheap: models load in ``setup``)."""
    return [cls(getattr(config, cls.name)) for cls in stage_classes(config)]


def stage_policy(config: Config, name: str, task_attempt: int = 0) -> StagePolicy:
    """How stage ``name`` runs in a task: retries, timeout and injected faults.
    ``task_attempt`` (which try of its engine task this is) matters only to injected faults."""
    spec = config.run.faults.get(name)
    return StagePolicy(
        retries=config.run.item_retries,
        timeout_s=config.run.stage_timeout_s.get(name),
        faults=FaultInjector(spec, task_attempt) if spec is not None else None,
    )


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
