"""The openai backend against a real local HTTP server: retries, timeouts, concurrency, secrets."""

import logging

import numpy as np
import pytest

from core.config import DescribeConfig
from core.errors import UsageError
from pipelines.stream import run_stream
from tests.fake_openai_server import FakeOpenAI
from transforms.describe import build_describer
from transforms.runner import StageRunner

KEY = "sk-test-SECRET-1234567890"


def clip(i):
    frames = [np.full((48, 64, 3), 40 * k, np.uint8) for k in range(6)]
    return {
        "item_id": f"clip{i}",
        "title": f"Title {i}",
        "frames": frames,
        "frame_timestamps_s": [0.5 * k for k in range(len(frames))],
        "audio": None,
        "duration_s": 3.0,
        "width": 64,
        "height": 48,
        "fps": 25,
        "transcript": "hi",
        "ocr_text": "",
        "tags": [],
        "text": None,
        "has_audio": True,
        "audio_rms": 0.1,
        "frame_stats": {},
        "visual_tags": [],
        "frames_sampled": len(frames),
        "visual_shots": [],
    }


def describer(server, monkeypatch, **overrides):
    monkeypatch.setenv("VLM_KEY", KEY)
    settings = {
        "backend": "openai",
        "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "endpoint": server.url,
        "api_key_env": "VLM_KEY",
        "max_images": 4,
        "concurrency": 3,
        "batch_size": 8,
        "timeout_s": 1.0,
        "max_retries": 2,
        "backoff_s": 0.01,
        "gguf_file": None,
    }
    return build_describer(DescribeConfig(**{**settings, **overrides}))


def test_frames_arrive_as_jpegs_and_lineage_is_recorded(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        out = describer(server, monkeypatch).process_batch([clip(i) for i in range(3)])
    for record in out:
        assert "error" not in record, record.get("error")
        assert record["description"].startswith("a clip with 4 frames about")
        assert record["served_model"] == "served/vlm-7b"
        assert (record["prompt_tokens"], record["description_tokens"]) == (104, 17)
        assert record["describer"] == "openai:Qwen/Qwen2.5-VL-7B-Instruct@main"
        assert record["prompt_version"] == "v4"
    assert all(r["images"] == [(64, 48)] * 4 for r in server.requests)
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)


def test_429_and_500_are_retried_then_succeed(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        server.script = ["429", "500"]
        [record] = describer(server, monkeypatch).process_batch([clip(0)])
    assert "error" not in record and len(server.requests) == 3


def test_persistent_5xx_gives_up_with_a_coded_error(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        server.script = ["500"] * 10
        [record] = describer(server, monkeypatch).process_batch([clip(0)])
    assert record["error"]["code"] == "describer_unavailable"
    assert len(server.requests) == 3  # 1 try + max_retries=2


def test_a_hanging_server_times_out_and_other_items_finish(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        server.script = ["hang", "hang", "hang"]
        out = describer(server, monkeypatch, concurrency=1).process_batch([clip(0), clip(1)])
    assert out[0]["error"]["code"] == "describe_timeout"
    assert "error" not in out[1]


def test_concurrency_is_the_streams_lanes_and_bounded(monkeypatch):
    """One request per batch, describe.concurrency lanes: the one place concurrency is set."""
    done = []
    with FakeOpenAI(api_key=KEY) as server:
        server.delay_s = 0.2
        stage = describer(server, monkeypatch, concurrency=3)
        assert (stage.batch_size, stage.lanes) == (1, 3)
        run_stream([clip(i) for i in range(8)], [StageRunner(stage)], done.append)
    assert len(done) == 8 and all("error" not in r for r in done)
    assert server.max_in_flight == 3


def test_the_key_never_reaches_logs_or_rows(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI(api_key="another-key") as server:  # the server refuses our key: 401
        [record] = describer(server, monkeypatch).process_batch([clip(0)])
    assert record["error"]["code"] == "describe_failed" and "401" in record["error"]["message"]
    assert KEY not in caplog.text
    assert KEY not in repr(record)


def test_missing_key_variable_fails_fast(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    stage = build_describer(DescribeConfig(backend="openai", model="m", api_key_env="NO_SUCH_KEY"))
    with pytest.raises(UsageError, match=r"\$NO_SUCH_KEY"):
        stage.setup()


def test_a_text_only_item_is_sent_without_images(monkeypatch):
    book = {**clip(0), "frames": [], "media_kind": "text", "text": "A guide to roses."}
    book.update(duration_s=None, width=None, height=None, fps=None, has_audio=False)
    with FakeOpenAI(api_key=KEY) as server:
        [out] = describer(server, monkeypatch).process_batch([book])
    assert "error" not in out and out["description"].startswith("a clip with 0 frames")
    [request] = server.requests
    assert request["images"] == []
    user_text = request["body"]["messages"][1]["content"][-1]["text"]
    assert 'text: "A guide to roses."' in user_text and 'picture: "none (no media)"' in user_text
