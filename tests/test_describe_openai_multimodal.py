"""The openai backend speaks vLLM's multimodal chat API: ``video_url`` and ``input_audio`` parts
checked against vLLM's schema on a real local server, refusals as error rows, lineage, and
frames mode's request kept byte for byte."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core.config import load_config
from tests.fake_openai_server import REFUSED_VIDEO, UNTRUSTED_KWARGS, FakeOpenAI, schema_problem
from tests.test_describe_openai import KEY, clip, describer
from tests.vllm.servers import documented_serve_commands
from transforms.describe import build_describer
from transforms.describe.openai_api import jpeg_data_url

RATE = 16_000
TIMES = [0.25, 0.75, 1.25, 1.75, 2.25, 2.75]  # the six frames of tests.test_describe_openai.clip
PICKED = [0, 2, 3, 5]  # pick_frames' choice of 4 from 6
PICKED_FPS = 1.2  # 3 gaps over 2.75 - 0.25 s


def tone(seconds=3.0):
    t = np.arange(int(RATE * seconds), dtype=np.float32) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def video_clip(i):
    return {**clip(i), "frame_timestamps_s": TIMES, "audio": tone(), "media_kind": "video"}


def audio_only_clip(i):
    record = {**clip(i), "frames": [], "frame_timestamps_s": [], "audio": tone(2.0)}
    record.update(media_kind="audio", width=None, height=None, fps=None, duration_s=2.0)
    return record


def text_only_item(i):
    record = {**clip(i), "frames": [], "frame_timestamps_s": [], "audio": None}
    record.update(media_kind="text", text="A guide to roses.", has_audio=False, fps=None)
    record.update(duration_s=None, width=None, height=None)
    return record


def user_text_of(request):
    return request["body"]["messages"][1]["content"][-1]["text"]


def multimodal(server, monkeypatch, **overrides):
    return describer(server, monkeypatch, video_input="video", audio_input="audio", **overrides)


def test_video_and_audio_parts_match_vllms_schema(monkeypatch):
    with FakeOpenAI(api_key=KEY, trust_request_mm_kwargs=True) as server:
        server.validate = True
        [out] = multimodal(server, monkeypatch).process_batch([video_clip(0)])
    assert "error" not in out, out.get("error")
    [request] = server.requests
    assert "problem" not in request
    kinds = [part["type"] for part in request["body"]["messages"][1]["content"]]
    assert kinds == ["video_url", "input_audio", "text"]  # no image_url parts
    [video] = request["videos"]
    assert video["frames"] == len(PICKED) and video["sizes"] == [(64, 48)] * len(PICKED)
    assert request["body"]["media_io_kwargs"] == {
        "video": {"fps": PICKED_FPS, "num_frames": len(PICKED)}
    }
    [audio] = request["audio"]
    assert (audio["rate"], audio["samples"], audio["subtype"]) == (RATE, 3 * RATE, "PCM_16")
    assert np.abs(audio["waveform"] - tone()).max() < 1e-4  # 16-bit PCM of the same waveform
    assert out["description"].startswith("a clip with 4 frames about")
    assert '"hi"' in user_text_of(request)  # the transcript stays in the prompt


def test_a_batch_is_described_with_its_inputs_in_lineage(monkeypatch):
    batch = [video_clip(0), audio_only_clip(1), text_only_item(2)]
    with FakeOpenAI(api_key=KEY, trust_request_mm_kwargs=True) as server:
        server.validate = True
        out = multimodal(server, monkeypatch).process_batch(batch)
    assert [r.get("error") for r in out] == [None, None, None]
    assert all("problem" not in r for r in server.requests) and len(server.requests) == 3
    lineage = [
        (r["describe_video_input"], r["describe_audio_input"], r["describe_frames"]) for r in out
    ]
    assert lineage == [("video", "audio", 4), ("none", "audio", 0), ("none", "transcript", 0)]
    audio_only = next(r for r in server.requests if "Title 1" in user_text_of(r))
    assert (len(audio_only["videos"]), len(audio_only["images"]), len(audio_only["audio"])) == (
        0,
        0,
        1,
    )
    assert "media_io_kwargs" not in audio_only["body"]


def test_an_endpoint_refusing_video_gives_an_error_row_and_the_run_goes_on(monkeypatch):
    with FakeOpenAI(api_key=KEY, trust_request_mm_kwargs=True) as server:
        server.refuse_video = True
        video, book = multimodal(server, monkeypatch).process_batch(
            [video_clip(0), text_only_item(1)]
        )
    assert video["error"]["code"] == "describe_input_refused"
    message = video["error"]["message"]
    assert REFUSED_VIDEO in message and "serve a model that takes video" in message
    assert "describe.video_input=frames" in message
    assert "error" not in book and book["description"].startswith("a clip with 0 frames")
    assert len(server.requests) == 2  # a 400 is not retried


def test_a_400_without_video_or_audio_parts_stays_describe_failed(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        server.script = ["echo_auth"]
        [record] = describer(server, monkeypatch).process_batch([video_clip(0)])
    assert record["error"]["code"] == "describe_failed"
    assert KEY not in record["error"]["message"]


def test_frames_mode_keeps_the_request_byte_for_byte(monkeypatch):
    record = video_clip(0)
    with FakeOpenAI(api_key=KEY) as server:
        for modes in ({}, {"video_input": "frames", "audio_input": "transcript"}):
            stage = describer(server, monkeypatch, prompt_version="v3", **modes)
            prompt = stage.render(record)
            frames = record["frames"]
            expected = {
                "model": "Qwen/Qwen2.5-VL-7B-Instruct",
                "messages": [
                    {"role": "system", "content": prompt.system},
                    {
                        "role": "user",
                        "content": [
                            *(
                                {"type": "image_url", "image_url": {"url": jpeg_data_url(f, 85)}}
                                for f in (frames[0], frames[2], frames[3], frames[5])
                            ),
                            {"type": "text", "text": prompt.user},
                        ],
                    },
                    *(
                        [{"role": "assistant", "content": prompt.answer_prefix}]
                        * bool(prompt.answer_prefix)
                    ),
                ],
                "max_tokens": stage.config.max_new_tokens,
                "temperature": 0.0,
                "seed": stage.config.seed,
                "repetition_penalty": stage.config.repetition_penalty,
                **(
                    {"continue_final_message": True, "add_generation_prompt": False}
                    if prompt.answer_prefix
                    else {}
                ),
            }
            sent = json.dumps(stage.payload(record, prompt)).encode()
            assert sent == json.dumps(expected).encode()


def test_the_fingerprint_tells_video_from_frames_and_auto_keeps_the_plain_one(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        fingerprints = {
            name: describer(server, monkeypatch, **modes).fingerprint()
            for name, modes in {
                "auto": {},
                "plain": {"video_input": "frames", "audio_input": "transcript"},
                "video": {"video_input": "video"},
                "audio": {"audio_input": "audio"},
            }.items()
        }
    assert fingerprints["auto"] == fingerprints["plain"]  # openai's auto sends frames
    assert len({fingerprints["plain"], fingerprints["video"], fingerprints["audio"]}) == 3


def test_frames_and_transcript_modes_send_no_audio_for_an_audio_only_clip(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        server.validate = True
        [out] = describer(server, monkeypatch).process_batch([audio_only_clip(0)])
    assert "error" not in out
    [request] = server.requests
    assert [p["type"] for p in request["body"]["messages"][1]["content"]] == ["text"]
    assert (out["describe_video_input"], out["describe_audio_input"]) == ("none", "transcript")


@pytest.mark.parametrize(
    ("part", "problem"),
    [
        ({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, "video/jpeg"),
        ({"type": "video_url", "video_url": {"url": "data:video/jpeg;base64,!!"}}, "base64"),
        ({"type": "video_url", "video_url": {"url": "data:video/jpeg;base64,AAAA"}}, "image"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA"}}, "format"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "parse"),
        ({"type": "audio_url", "audio_url": {"url": "data:audio/ogg;base64,AA=="}}, "audio/wav"),
        ({"type": "video", "video": "x.mp4"}, "unknown part type"),
        ({"type": "image_url"}, "needs"),
    ],
)
def test_the_test_server_refuses_parts_outside_vllms_schema(part, problem):
    body = {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "t"}]}]}
    assert problem in schema_problem(body)


@pytest.mark.parametrize(
    ("name", "sends"),
    [("production.vllm.yaml", (True, False)), ("production.vllm-omni.yaml", (True, True))],
)
def test_the_vllm_examples_validate_and_send_what_they_say(name, sends):
    config = load_config(f"configs/{name}")
    stage = build_describer(config.describe)
    assert (stage.sends_video, stage.sends_audio) == sends
    assert stage.needs >= {"frame_timestamps_s"}


def test_a_server_that_refuses_media_io_kwargs_quotes_vllm_and_names_both_fixes(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:  # a stock vLLM: no --trust-request-mm-kwargs
        [out] = multimodal(server, monkeypatch).process_batch([video_clip(0)])
    assert out["error"]["code"] == "describe_input_refused"
    message = out["error"]["message"]
    assert UNTRUSTED_KWARGS in message  # the server's whole reason, its hint included
    assert "--trust-request-mm-kwargs" in message and "describe.video_timing=server" in message
    assert "limit-mm-per-prompt" not in message  # not advice that cannot help


def test_server_timing_sends_no_media_io_kwargs_and_says_so_in_lineage_and_fingerprint(
    monkeypatch,
):
    with FakeOpenAI(api_key=KEY) as server:  # a stock vLLM takes it
        server.validate = True
        stage = multimodal(server, monkeypatch, video_timing="server")
        [out] = stage.process_batch([video_clip(0)])
        timed = multimodal(server, monkeypatch)
    assert "error" not in out, out.get("error")
    [request] = server.requests
    assert "media_io_kwargs" not in request["body"] and request["videos"][0]["frames"] == 4
    assert out["describe_video_input"] == "video_server_fps"
    assert stage.fingerprint() != timed.fingerprint()
    assert timed.fingerprint_fields()["video_encoding"].endswith(
        "media_io_kwargs.video(fps,num_frames)"
    )


def test_too_many_images_is_a_refused_input_that_names_the_limit(monkeypatch):
    with FakeOpenAI(api_key=KEY, limits={"image": 2}) as server:
        [out] = describer(server, monkeypatch).process_batch([video_clip(0)])
    message = out["error"]["message"]
    assert out["error"]["code"] == "describe_input_refused"
    assert "At most 2 image(s)" in message and "--limit-mm-per-prompt for image" in message


@pytest.mark.parametrize(
    ("settings", "sent"),
    [
        ({}, {"repetition_penalty": 1.3}),
        (
            {"repetition_penalty": 1.1, "min_new_tokens": 12},
            {"repetition_penalty": 1.1, "min_tokens": 12},
        ),
        ({"repetition_penalty": 1.0}, {}),  # neutral: a stricter server is not sent them
    ],
)
def test_every_fingerprinted_generation_setting_is_sent(monkeypatch, settings, sent):
    with FakeOpenAI(api_key=KEY) as server:
        stage = describer(server, monkeypatch, **settings)
        body = stage.payload(video_clip(0), stage.render(video_clip(0)))
    extras = {k: body[k] for k in ("repetition_penalty", "min_tokens") if k in body}
    assert extras == sent
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (
        stage.config.max_new_tokens,
        stage.config.temperature,
        stage.config.seed,
    )


def test_an_answer_prefix_is_continued_not_answered_in_a_new_turn(monkeypatch):
    with FakeOpenAI(api_key=KEY) as server:
        stage = describer(server, monkeypatch)
        prompt = stage.render(video_clip(0))
        plain = stage.payload(video_clip(0), prompt)
        prefixed = stage.payload(
            video_clip(0), dataclasses.replace(prompt, answer_prefix="This clip shows")
        )
    assert "continue_final_message" not in plain and plain["messages"][-1]["role"] == "user"
    assert prefixed["messages"][-1] == {"role": "assistant", "content": "This clip shows"}
    assert (prefixed["continue_final_message"], prefixed["add_generation_prompt"]) == (True, False)


@pytest.mark.parametrize("name", ["production.vllm.yaml", "production.vllm-omni.yaml"])
def test_each_vllm_example_names_the_serve_command_the_docs_give(name):
    """The config's comment and docs/guides/describers.md cannot drift apart: make test-vllm
    starts vLLM with the docs' command, and this holds the comment to it."""
    comment = "".join(
        line.removeprefix("#").strip().removesuffix("\\") + " "
        for line in Path("configs", name).read_text().splitlines()
        if line.startswith("#   ")
    )
    [(model, args)] = documented_serve_commands(f"```bash\n{comment}\n```").items()
    assert documented_serve_commands()[model] == args
    assert load_config(f"configs/{name}").describe.model == model
