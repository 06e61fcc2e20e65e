"""The fake server answers to the real one: one corpus of requests goes to
tests/fake_openai_server.py and to a real vLLM, each set up as the other is (the fake's
``trust_request_mm_kwargs`` and ``limits`` are the server's flags and the model's modalities),
and both must answer each request with the same status class. The fake stays for what a real
server cannot be made to do here: faults, hangs and capacity models."""

import base64
import io

import httpx
import numpy as np
import pytest
import soundfile
from PIL import Image

from tests.fake_openai_server import FakeOpenAI

pytestmark = pytest.mark.vllm

# Each server's flags and its model's modalities, as the fake models them (servers.py starts
# the real ones: vl and omni as documented, stock without the flag and with no video)
FAKE_SETTINGS = {
    "vl": {"trust_request_mm_kwargs": True, "limits": {"image": 8, "video": 1, "audio": 0}},
    "omni": {"trust_request_mm_kwargs": True, "limits": {"image": 8, "video": 1, "audio": 1}},
    "stock": {"trust_request_mm_kwargs": False, "limits": {"image": 8, "video": 0, "audio": 0}},
}


def jpeg(shade: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), shade, np.uint8)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def wav() -> str:
    buffer = io.BytesIO()
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    soundfile.write(buffer, tone.astype(np.float32), 16_000, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + jpeg(90)}}
VIDEO = {
    "type": "video_url",
    "video_url": {"url": "data:video/jpeg;base64," + ",".join(jpeg(40 * i) for i in range(4))},
}
AUDIO = {"type": "input_audio", "input_audio": {"data": wav(), "format": "wav"}}
TIMING = {"media_io_kwargs": {"video": {"fps": 2.0, "num_frames": 4}}}
REQUESTS = {
    "text": ([], {}),
    "image": ([IMAGE], {}),
    "images over the limit": ([IMAGE] * 9, {}),
    "video without timing": ([VIDEO], {}),
    "video with timing": ([VIDEO], TIMING),
    "two videos": ([VIDEO, VIDEO], {}),
    "audio": ([AUDIO], {}),
    "video and audio with timing": ([VIDEO, AUDIO], TIMING),
    "unknown part type": ([{"type": "video", "video": "clip.mp4"}], {}),
    "image that is not base64": (
        [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,!!notbase64"}}],
        {},
    ),
    "video frame that is not a JPEG": (
        [{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64,AAAA"}}],
        {},
    ),
    "audio that is not a WAV": (
        [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
        {},
    ),
}


def body(model: str, parts: list, extra: dict) -> dict:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Describe."},
            {"role": "user", "content": [*parts, {"type": "text", "text": "title: a clip"}]},
        ],
        "max_tokens": 4,
        "temperature": 0.0,
        "repetition_penalty": 1.3,
        **extra,
    }


def status_class(url: str, request: dict) -> str:
    reply = httpx.post(url + "/chat/completions", json=request, timeout=120)
    return f"{reply.status_code // 100}xx"


@pytest.mark.parametrize("server", list(FAKE_SETTINGS))
def test_the_fake_answers_every_request_in_the_real_servers_status_class(vllm_servers, server):
    real = vllm_servers[server]
    with FakeOpenAI(served_model=real.model, **FAKE_SETTINGS[server]) as fake:
        fake.validate = True
        answers = {
            name: (
                status_class(real.url, body(real.model, parts, extra)),
                status_class(fake.url, body(real.model, parts, extra)),
            )
            for name, (parts, extra) in REQUESTS.items()
        }
    differing = {name: pair for name, pair in answers.items() if pair[0] != pair[1]}
    assert not differing, f"(real, fake) differ: {differing}"
    assert {real for real, _ in answers.values()} == {"2xx", "4xx"}  # both kinds were asked
