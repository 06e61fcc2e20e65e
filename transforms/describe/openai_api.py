"""The ``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint.

vLLM, SGLang and TGI all serve this wire format. Frames go as base64 JPEG ``image_url`` parts;
with ``describe.video_input=video`` they go as one ``video_url`` part, and with
``describe.audio_input=audio`` the waveform goes as an ``input_audio`` WAV part, in the forms
vLLM documents (see ``video_part`` and ``audio_part``). Requests run on a bounded thread pool,
each within a deadline and a byte cap (``exchange.post_bounded``), and 429 / 5xx / timeouts are
retried with exponential backoff (honouring ``Retry-After``). An answer is data
(``completion.read_completion``): validated, size-capped, cleaned of control characters and of
echoed credentials. The API key is read from the environment variable that config names (sent
as ``Authorization: Bearer``; without one, the endpoint URL's user:password goes as ``Basic``);
neither is logged, written to a table, or left in what the server sends back.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import numpy as np
from PIL import Image

from core.config import DescribeConfig
from core.errors import UsageError
from core.redact import (
    KEY_SHAPES,
    SECRET_KEY,
    endpoint_credentials,
    redact_url,
    register_endpoint_credentials,
    register_secret,
    shown,
    shown_env_name,
)
from transforms.describe.base import PLAIN_INPUTS, Describer, ShownInputs, pick_frames
from transforms.describe.completion import body_cap, cleaned, read_completion
from transforms.describe.exchange import Reply, deadline_passed, post_bounded
from transforms.describe.prompt import RenderedPrompt
from transforms.stage import Record, StageError, isolate

logger = logging.getLogger(__name__)
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0
SAMPLE_RATE = 16_000  # the media stage's waveform (media.sample_rate)
MODALITY_OF_PART = {
    "image_url": "image",
    "video_url": "video",
    "input_audio": "audio",
    "audio_url": "audio",
}
MEDIA_PART_TYPES = frozenset(MODALITY_OF_PART)
# What goes on the wire in each non-plain mode, by describe.video_timing; in the fingerprint, so
# a change of form is a new describer version.
VIDEO_ENCODINGS = {
    "request": "video_url:video/jpeg-frames+media_io_kwargs.video(fps,num_frames)",
    "server": "video_url:video/jpeg-frames",
}
# describe_video_input as written on rows: the model got the frames' own times, or the
# server's default rate (vLLM: 1 fps unless its --media-io-kwargs says otherwise)
VIDEO_SHOWN = {"request": "video", "server": "video_server_fps"}
AUDIO_ENCODING = "input_audio:wav-pcm16-16k"
REASON_CHARS = 600  # enough for vLLM's longest 400 message, with its hint
# vLLM's 400 for more parts of a modality than --limit-mm-per-prompt allows (0: the model
# does not take that modality at all)
MEDIA_LIMIT = re.compile(r"At most (\d+) (image|video|audio)\(s\) may be provided")
# Query parameters that carry a credential by name (beyond core.redact.SECRET_KEY): Azure
# Functions' code, SAS signatures, a bare key.
KEY_PARAMS = frozenset({"key", "code", "sig", "signature", "auth", "authorization"})


def chat_url(endpoint: str) -> str:
    """``<endpoint>/chat/completions``, the endpoint's query kept after the path (Azure's
    ``?api-version=``), its user:password left out (sent as a header instead).

    A query parameter that holds a credential is refused: in the URL it is sent in every
    request line, lands in server and proxy access logs, and would be stored with the run's
    config; describe.api_key_env is the one place for a key (sent as Authorization: Bearer)."""
    parts = urlsplit(endpoint)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        plain = name.lower().replace("-", "_")
        if SECRET_KEY.search(plain) or plain in KEY_PARAMS or KEY_SHAPES.search(value):
            raise UsageError(
                f"describe.endpoint carries a credential in its query string (parameter "
                f"'{shown(name[:40])}', value not shown): a key in the URL is sent in every "
                "request line and kept in access logs. Export it in an environment variable "
                "and set describe.api_key_env to that variable's name (it is sent as "
                "Authorization: Bearer); other query parameters (api-version=...) are kept"
            )
    host = parts.netloc.rsplit("@", 1)[-1]
    path = parts.path.rstrip("/") + "/chat/completions"
    return urlunsplit((parts.scheme, host, path, parts.query, ""))


def auth_headers(api_key: str | None, endpoint: str) -> dict[str, str]:
    """The key as ``Bearer``; without one, the endpoint's user:password as ``Basic``."""
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    if credentials := endpoint_credentials(endpoint):
        pair = ":".join(credentials).encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


def jpeg_data_url(frame: np.ndarray, quality: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def jpeg_base64(frame: np.ndarray, quality: int) -> str:
    return jpeg_data_url(frame, quality).removeprefix("data:image/jpeg;base64,")


def sampled_fps(timestamps: list[float]) -> float:
    """The rate of the sampled frames, from their times: (n - 1) gaps over their span. One
    frame, or frames without distinct times, read as 1 fps (vLLM's own default)."""
    if len(timestamps) < 2 or timestamps[-1] <= timestamps[0]:
        return 1.0
    return round((len(timestamps) - 1) / (timestamps[-1] - timestamps[0]), 4)


def video_part(frames: list[np.ndarray], quality: int) -> dict[str, Any]:
    """The frames as one vLLM ``video_url`` part: a ``data:video/jpeg;base64,`` URL whose
    payload is the frames' base64 JPEGs joined by commas.

    Followed: vLLM ``vllm/multimodal/media/video.py`` (``VideoMediaIO.load_base64``: media type
    ``video/jpeg`` splits the data on "," and decodes each part as a JPEG frame;
    ``encode_base64`` writes the same form) and the ``video_url`` part of
    ``examples/online_serving/openai_chat_completion_client_for_multimodal.py``."""
    joined = ",".join(jpeg_base64(f, quality) for f in frames)
    return {"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + joined}}


def video_timing(timestamps: list[float]) -> dict[str, Any]:
    """The request's ``media_io_kwargs`` for that video: its frame rate and frame count.

    vLLM reads ``media_io_kwargs.video.fps`` into the jpeg-sequence video's metadata (frame i at
    i / fps), from which Qwen2.5-VL's processor takes ``second_per_grid_ts`` and Qwen3-VL its
    timestamps; ``num_frames`` keeps a server default (``--media-io-kwargs``) from cutting the
    frame list short (same file, ``VideoMediaIO.merge_kwargs`` / ``load_base64``). vLLM 0.32
    refuses it (HTTP 400) unless the server runs with ``--trust-request-mm-kwargs``; without
    it (``describe.video_timing=server``) vLLM assumes 1 fps."""
    return {"video": {"fps": sampled_fps(timestamps), "num_frames": len(timestamps)}}


def audio_part(waveform: np.ndarray) -> dict[str, Any]:
    """The 16 kHz waveform as an ``input_audio`` part: a base64 16-bit PCM WAV, ``format`` wav.

    Followed: vLLM ``docs/features/multimodal_inputs.md`` (Audio Inputs: ``input_audio`` with
    base64 ``data`` and ``format``, OpenAI's own audio part; vLLM also takes ``audio_url``) and
    ``run_audio`` in the example above."""
    import soundfile

    buffer = io.BytesIO()
    samples = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def carries_media(payload: dict[str, Any]) -> list[str]:
    """The media part types in a chat request (empty for text only)."""
    found = {
        part.get("type")
        for message in payload.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
    }
    return sorted(found & MEDIA_PART_TYPES)


def server_reason(reply: Reply) -> str:
    """The server's own words for a refusal: the OpenAI error body's message (vLLM appends
    the parameter it refused), else the body's start; credentials the body echoes masked
    before it is cut, so no cut leaves part of one."""
    try:
        error = json.loads(reply.body).get("error")
        message = error.get("message") if isinstance(error, dict) else None
    except (ValueError, AttributeError, RecursionError):
        message = None
    text = message if isinstance(message, str) and message else reply.body.decode(errors="replace")
    return cleaned(text)[:REASON_CHARS]


SWITCH_OFF = {
    "image": "lower describe.max_images",
    "video": "set describe.video_input=frames",
    "audio": "set describe.audio_input=transcript",
}


def refused_input(kinds: list[str], reason: str) -> StageError | None:
    """A 400 that refuses the request's media or media settings: the server's reason, quoted,
    and the change that answers it. None for a 400 about something else in a request with
    images only (the prompt, say): that is no refused input."""
    sent = sorted({MODALITY_OF_PART[k] for k in kinds})
    if "media_io_kwargs" in reason:
        advice = (
            "start vLLM with --trust-request-mm-kwargs (as the documented serve commands do), "
            "or set describe.video_timing=server to let the server's default frame rate apply"
        )
    elif limit := MEDIA_LIMIT.search(reason):
        allowed, modality = int(limit.group(1)), limit.group(2)
        advice = (
            f"serve a model that takes {modality}, or {SWITCH_OFF[modality]}"
            if allowed == 0
            else f"raise vLLM's --limit-mm-per-prompt for {modality}, or {SWITCH_OFF[modality]}"
        )
    elif sent == ["image"]:
        return None
    else:
        advice = "serve a model that takes it, or " + " / ".join(SWITCH_OFF[m] for m in sent)
    return StageError(
        "describe_input_refused",
        f"the endpoint refused the request's {' and '.join(sent)} input (HTTP 400: {reason}): "
        + advice,
    )


class OpenAIDescriber(Describer):
    backend = "openai"
    resources = "cpu"  # the model runs in the server: the task's executor needs no GPU
    # One request per batch and describe.concurrency batches in flight: the stream keeps that
    # many requests out across tasks' items, and its bounded queues are the backpressure.
    lanes_setting = "concurrency"
    # what a video or audio request sends beyond the frames, so the stream holds these media
    # fields until this stage ran
    needs = Describer.needs | {"frame_timestamps_s", "audio"}

    def __init__(self, config: DescribeConfig):
        super().__init__(config)
        self.batch_size = 1
        # auto sends frames and the transcript: the client cannot know what the served model
        # takes (describe.video_input / audio_input)
        self.sends_video = config.video_input == "video"
        self.sends_timing = self.sends_video and config.video_timing == "request"
        self.sends_audio = config.audio_input == "audio"
        self.url = chat_url(config.endpoint)  # refuses a key in the query before any run

    def load(self) -> None:
        import httpx

        self._api_key = None
        if self.config.api_key_env:
            self._api_key = os.environ.get(self.config.api_key_env)
            if not self._api_key:
                raise UsageError(
                    f"describe.api_key_env names {shown_env_name(self.config.api_key_env)}, "
                    "which is empty or unset: export the key there"
                )
        # what a server may echo back is masked wherever text is stored or printed
        register_secret(self._api_key)
        register_endpoint_credentials(self.config.endpoint)
        self._headers = auth_headers(self._api_key, self.config.endpoint)
        # no connection kept alive: each request's own connection is what its deadline cuts
        limits = httpx.Limits(max_connections=self.config.concurrency, max_keepalive_connections=0)
        self._model_client = httpx.Client(timeout=self.config.timeout_s, limits=limits)
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def fingerprint_fields(self) -> dict[str, Any]:
        fields = {
            **super().fingerprint_fields(),
            "endpoint": redact_url(self.config.endpoint),  # stored in runs: no credentials
            "jpeg_quality": self.config.jpeg_quality,
        }
        if self.sends_video:
            fields["video_encoding"] = VIDEO_ENCODINGS[self.config.video_timing]
        if self.sends_audio:
            fields["audio_encoding"] = AUDIO_ENCODING
        return fields

    def input_fingerprint(self) -> dict[str, str]:
        """The modes as sent, not as configured: ``auto`` sends frames and the transcript, so
        it keeps the fingerprint that lakes written before these settings existed carry."""
        sent = {
            "video_input": "video" if self.sends_video else "frames",
            "audio_input": "audio" if self.sends_audio else "transcript",
        }
        return {key: mode for key, mode in sent.items() if mode != PLAIN_INPUTS[key]}

    def shown_inputs(self, record: Record) -> ShownInputs:
        """What the request carried: the frames as images or as one video, and the waveform."""
        frames = len(pick_frames(record.get("frames") or [], self.config.max_images))
        shown = VIDEO_SHOWN[self.config.video_timing] if self.sends_video else "frames"
        video = shown if frames else "none"
        audio = "audio" if self.sends_audio and has_waveform(record) else "transcript"
        return ShownInputs(video, audio, frames)

    def run_batch(self, records: list[Record]) -> None:
        for record in records:
            isolate(record, self.name, self.describe_one, record)

    def payload(self, record: Record, prompt: RenderedPrompt) -> dict[str, Any]:
        content, media_io_kwargs = self.media_parts(record)
        content.append({"type": "text", "text": prompt.user})
        messages = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": content},
        ]
        body = {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": self.config.max_new_tokens,
            "temperature": self.config.temperature,
            "seed": self.config.seed,
            **self.sampling_extras(),
        }
        if prompt.answer_prefix:
            # vLLM's (and SGLang's) way to continue the assistant's message instead of
            # closing it and opening a new turn: the answer goes on from the prefix
            messages.append({"role": "assistant", "content": prompt.answer_prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        if media_io_kwargs:
            body["media_io_kwargs"] = media_io_kwargs
        return body

    def sampling_extras(self) -> dict[str, Any]:
        """The fingerprinted generation settings beyond OpenAI's own, under the names vLLM and
        SGLang take; left out at their neutral values, so a stricter server is not sent them."""
        extras: dict[str, Any] = {}
        if self.config.repetition_penalty != 1.0:
            extras["repetition_penalty"] = self.config.repetition_penalty
        if self.config.min_new_tokens:
            extras["min_tokens"] = self.config.min_new_tokens
        return extras

    def media_parts(self, record: Record) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The user message's picture and sound parts, and the ``media_io_kwargs`` they need."""
        quality = self.config.jpeg_quality
        frames = record.get("frames") or []
        picked = pick_frames(list(range(len(frames))), self.config.max_images)
        parts: list[dict[str, Any]] = []
        media_io_kwargs: dict[str, Any] = {}
        if picked and self.sends_video:
            parts.append(video_part([frames[i] for i in picked], quality))
            if self.sends_timing:
                media_io_kwargs = video_timing(picked_times(record, picked))
        else:
            parts += [
                {"type": "image_url", "image_url": {"url": jpeg_data_url(frames[i], quality)}}
                for i in picked
            ]
        if self.sends_audio and has_waveform(record):
            parts.append(audio_part(record["audio"]))
        return parts, media_io_kwargs

    def describe_one(self, record: Record) -> None:
        started = time.perf_counter()
        prompt = self.render(record)
        body = self.post_with_retries(self.payload(record, prompt))
        answer = read_completion(body, max_new_tokens=self.config.max_new_tokens)
        self.attach(
            record,
            prompt,
            f"{prompt.answer_prefix} {answer.text}".strip(),
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            started=started,
            served_model=answer.served_model,
            finish_reason=answer.finish_reason,
        )

    def post_with_retries(self, payload: dict[str, Any]) -> bytes:
        """POST the chat request and return the 200 body; retry 429/5xx/timeouts with
        exponential backoff and jitter. Each try is bounded by describe.timeout_s (the whole
        exchange) and by a body cap from describe.max_new_tokens (``post_bounded``)."""
        import httpx

        last, timed_out, retry_after = "", False, None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
                retry_after = None
            try:
                reply = post_bounded(
                    self._model_client,
                    self.url,
                    payload=payload,
                    headers=self._headers,
                    deadline_s=self.config.timeout_s,
                    max_bytes=body_cap(self.config.max_new_tokens),
                )
            except StageError as exc:
                if exc.code != "describe_timeout":
                    raise
                last, timed_out = exc.message, True
                continue
            except httpx.TimeoutException:  # one operation took the whole deadline
                last, timed_out = deadline_passed(self.config.timeout_s).message, True
                continue
            except httpx.TransportError as exc:
                last, timed_out = f"connection failed: {type(exc).__name__}", False
                continue
            if reply.status == 200:
                return reply.body
            timed_out = False
            kinds = carries_media(payload) if reply.status == 400 else []
            if kinds and (refused := refused_input(kinds, server_reason(reply))):
                raise refused
            last = f"HTTP {reply.status}: {server_reason(reply)}"
            if reply.status not in RETRYABLE:
                raise StageError("describe_failed", last)
            retry_after = reply.headers.get("retry-after")
        code = "describe_timeout" if timed_out else "describer_unavailable"
        raise StageError(code, f"gave up after {self.config.max_retries + 1} attempts: {last}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            return min(MAX_BACKOFF_S, float(retry_after))
        base = self.config.backoff_s * 2 ** (attempt - 1)
        return min(MAX_BACKOFF_S, base * (0.5 + random.random()))


def has_waveform(record: Record) -> bool:
    audio = record.get("audio")
    return audio is not None and np.asarray(audio).size > 0


def picked_times(record: Record, picked: list[int]) -> list[float]:
    """The picked frames' times; without (or with too few) recorded times, 1 s apart."""
    times = record.get("frame_timestamps_s") or []
    if len(times) <= max(picked):
        return [float(i) for i in range(len(picked))]
    return [float(times[i]) for i in picked]
