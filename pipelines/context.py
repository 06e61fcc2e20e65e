"""What a run derives from its config and its lake, computed once: the encoder id, the stages'
fingerprints and the pipeline fingerprint (what incremental selection compares), and the
pinned codebook (what tasks code Semantic IDs with)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from core.config import Config
from pipelines.codebooks import pinned_codebook
from pipelines.incremental import pipeline_fingerprint
from schemas.store import DeltaStore
from transforms.encode import encoder_id
from transforms.pipeline import build_stages, stage_fingerprints
from transforms.semantic_ids import Codebook


@dataclass
class RunContext:
    """One run's derived settings. ``store`` is read here (codebooks); commits go through
    the engine's store. Each value is computed on first use, so a command that needs only
    the encoder and the codebook (``enrich assign-sids``) builds no stages."""

    config: Config
    store: DeltaStore

    @cached_property
    def encoder(self) -> str:
        """``model@revision`` of the sentence encoder: what codebooks are fitted for."""
        return encoder_id(self.config.encode)

    @cached_property
    def stage_fingerprints(self) -> dict[str, str]:
        """Every stage's fingerprint (the stages are built, not set up: no model loads)."""
        return stage_fingerprints(build_stages(self.config))

    @cached_property
    def fingerprint(self) -> str:
        """The pipeline fingerprint every row of the run carries."""
        return pipeline_fingerprint(self.stage_fingerprints)

    @cached_property
    def pinned(self) -> Codebook | None:
        """The codebook the run's tasks code with (None: the lake has none for the config)."""
        return pinned_codebook(self.store, self.config.semantic_ids, self.encoder)

    def sid_codebook(self) -> Codebook | None:
        """The codebook the Semantic-ID waves code with: the pinned one; when none was
        pinned, a first codebook that a concurrent run fitted meanwhile (looked up again
        only then); None, and the caller fits the lake's first one."""
        if self.pinned is not None:
            return self.pinned
        return pinned_codebook(self.store, self.config.semantic_ids, self.encoder)
