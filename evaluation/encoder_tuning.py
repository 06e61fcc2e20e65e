"""Align the sentence encoder with user behaviour (2508.10478): fine-tune it on co-interactions.

Items one user consumed within ``window`` steps of each other become positive pairs, and
(query, item) pairs are added when given. sentence-transformers' MultipleNegativesRankingLoss
pulls each pair together against the other texts of its batch (in-batch negatives), so a batch
never holds the same text twice. The tuned model is saved as a new encoder version: a
sentence-transformers folder plus ``encoder.json`` (version, base encoder, training figures),
on any storage; the manifest is written last, so a folder without it is no tuned encoder. Its
lineage id is ``<folder>@<version>`` (``transforms.models.model_revision``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from core import storage
from evaluation.data import read_queries
from transforms.models import ENCODER_MANIFEST, tuned_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningSettings:
    """How ``enrich fit-encoder`` trains; every field has a default."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    window: int = 3  # items at most this many steps apart in a user's history form a pair
    max_pairs: int = 50_000  # a seeded sample of the pairs when there are more
    max_seq_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "window", "max_pairs", "max_seq_length"):
            if (value := getattr(self, name)) < 1:
                raise ValueError(f"fit-encoder: {name} must be at least 1, got {value}")
        if self.batch_size < 2:
            raise ValueError("fit-encoder: batch_size must be at least 2 (in-batch negatives)")
        if not self.lr > 0:
            raise ValueError(f"fit-encoder: lr must be positive, got {self.lr}")


def co_interaction_pairs(interactions: pa.Table, window: int) -> list[tuple[str, str]]:
    """Distinct unordered item pairs that one user consumed within ``window`` steps."""
    ordered = interactions.sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
    users = ordered["user_id"].to_pylist()
    items = ordered["item_id"].to_pylist()
    pairs = set()
    for start in range(len(items)):
        for end in range(start + 1, min(start + window + 1, len(items))):
            if users[end] != users[start]:
                break
            if items[start] != items[end]:
                pairs.add(tuple(sorted((items[start], items[end]))))
    return sorted(pairs)


def read_query_pairs(uri: str) -> list[tuple[str, str]]:
    """(query, item_id) search pairs: the relevant rows (relevance > 0) of a queries table
    (``evaluation.data.read_queries``: Parquet, CSV or JSONL), its ``test`` rows left out so
    that ``enrich evaluate`` can score search on queries the encoder never saw."""
    rows = read_queries(uri).to_pylist()
    return [(r["query"], r["item_id"]) for r in rows if r["relevance"] > 0 and r["split"] != "test"]


def training_examples(
    item_pairs: list[tuple[str, str]],
    query_pairs: list[tuple[str, str]],
    texts: dict[str, str],
    settings: TuningSettings,
) -> list[tuple[str, str]]:
    """(anchor text, positive text) examples for pairs whose items have text, sampled to
    ``max_pairs``; raises when none is left."""
    examples = [(texts[a], texts[b]) for a, b in item_pairs if a in texts and b in texts]
    examples += [(query, texts[item]) for query, item in query_pairs if item in texts]
    examples = [(a, b) for a, b in examples if a != b]
    if len(examples) < 2:
        raise ValueError(
            f"fit-encoder: {len(examples)} training pair(s) whose items have descriptions in the "
            "lake; it needs users with at least two described items (or --queries)"
        )
    if len(examples) > settings.max_pairs:
        examples = random.Random(settings.seed).sample(examples, settings.max_pairs)
    return examples


def batches_without_repeats(
    examples: list[tuple[str, str]], batch_size: int, seed: int
) -> list[list[tuple[str, str]]]:
    """Shuffled batches in which no text appears twice, so every in-batch negative is one."""
    pending = examples[:]
    random.Random(seed).shuffle(pending)
    batches = []
    while pending:
        batch, seen, deferred = [], set(), []
        for example in pending:
            if len(batch) < batch_size and not seen.intersection(example):
                batch.append(example)
                seen.update(example)
            else:
                deferred.append(example)
        batches.append(batch)
        pending = deferred
    return [batch for batch in batches if len(batch) > 1]


def fine_tune(model: Any, examples: list[tuple[str, str]], settings: TuningSettings) -> list[float]:
    """Train ``model`` (a SentenceTransformer) in place with MultipleNegativesRankingLoss;
    the mean loss of each epoch."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(settings.seed)
    model.max_seq_length = settings.max_seq_length
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    losses = []
    model.train()
    for epoch in range(settings.epochs):
        total, steps = 0.0, 0
        for batch in batches_without_repeats(examples, settings.batch_size, settings.seed + epoch):
            features = [_features(model, [pair[side] for pair in batch]) for side in (0, 1)]
            loss = loss_fn(features, None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(1, steps))
        logger.info("fit-encoder: epoch %d, loss %.4f", epoch + 1, losses[-1])
    model.eval()
    return losses


def _features(model: Any, texts: list[str]) -> dict:
    from sentence_transformers.util import batch_to_device

    return batch_to_device(model.preprocess(texts), model.device)


def save_encoder(model: Any, manifest: dict[str, Any], out: str | None, root: str) -> str:
    """Save the model and its ``encoder.json`` to ``out``, or to ``root/<version>`` (local
    folders or storage URIs); the version is a hash of the saved weights and the manifest.
    Returns the folder, normalized: what ``encode.model`` names."""
    with tempfile.TemporaryDirectory(prefix="enrich-encoder-") as staging:
        model.save(staging)
        version = "ft-" + weights_hash(Path(staging), manifest)[:12]
        target = storage.normalize(out) if out else storage.join(root, version)
        publish_encoder(staging, target, {**manifest, "encoder_version": version})
    return target


def publish_encoder(folder: str, target: str, manifest: dict[str, Any]) -> None:
    """Copy a saved model folder to ``target`` and write ``encoder.json`` last: readers treat a
    folder without it as no encoder, so none loads a half-copied one. A folder that already
    holds this version is kept."""
    if tuned_version(target) == manifest["encoder_version"]:
        logger.info("fit-encoder: %s already holds this version; kept", target)
        return
    manifest_uri = storage.join(target, ENCODER_MANIFEST)
    storage.delete_file(manifest_uri)  # an older encoder at --out is absent while replaced
    storage.copy_tree(folder, target)
    storage.write_bytes(manifest_uri, json.dumps(manifest, indent=2, sort_keys=True).encode())


def weights_hash(folder: Path, manifest: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode())
    for path in sorted(folder.rglob("*.safetensors")) + sorted(folder.rglob("*.bin")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def tuned_manifest(
    base_encoder: str, settings: TuningSettings, counts: dict[str, int], losses: list[float]
) -> dict[str, Any]:
    """What ``encoder.json`` records about a tuned encoder (its version is added on save)."""
    return {
        "base_encoder": base_encoder,
        "loss": "MultipleNegativesRankingLoss",
        "settings": asdict(settings),
        "pairs": counts,
        "epoch_losses": [round(value, 5) for value in losses],
    }
