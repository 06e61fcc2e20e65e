"""Encode: the description (optionally with the title) → an L2-normalized embedding."""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np

from core.config import EncodeConfig
from transforms.models import model_revision, pick_device, resolve_model
from transforms.stage import Record, Stage, StageError


def encoded_text(record: Record, mode: str) -> str:
    """The exact text the encoder sees, chosen by ``encode.text``."""
    description = record.get("description") or ""
    if mode == "title_description" and record.get("title"):
        return f"{record['title']}. {description}"
    return description


class EncodeStage(Stage):
    """sentence-transformers, batched, normalized; the model loads once per worker."""

    name = "encode"
    needs = frozenset({"item_id", "title", "description"})
    adds = frozenset({"embedding", "encoded_text_sha", "encoder"})

    def __init__(self, config: EncodeConfig):
        super().__init__(config, batch_size=config.batch_size)

    @cached_property
    def encoder_id(self) -> str:
        """``model@revision``, looked up once (package metadata is read from disk)."""
        return encoder_id(self.config)

    def fingerprint_fields(self) -> dict:
        return {"revision": model_revision(self.config.model)}

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(
            resolve_model(self.config.model), device=pick_device(self.config.device)
        )

    def run_batch(self, records: list[Record]) -> None:
        texts = [encoded_text(r, self.config.text) for r in records]
        for record, text in zip(records, texts, strict=True):
            if not text.strip():
                raise StageError("encode_failed", f"nothing to encode for {record['item_id']}")
        vectors = self.encode_texts(texts)
        for record, text, vector in zip(records, texts, vectors, strict=True):
            if not np.all(np.isfinite(vector)):
                raise StageError("encode_failed", "embedding has NaN or inf values")
            record["embedding"] = vector
            record["encoded_text_sha"] = hashlib.sha256(text.encode()).hexdigest()[:16]
            record["encoder"] = self.encoder_id

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 embeddings of ``texts`` (after ``setup()``)."""
        return self._model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        ).astype(np.float32)


def encoder_id(config: EncodeConfig) -> str:
    """The encoder's lineage id, ``model@revision``: what codebooks are fitted for."""
    return f"{config.model}@{model_revision(config.model)}"
