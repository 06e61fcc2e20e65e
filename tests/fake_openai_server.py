"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions wire format.

It is scripted per request: answer normally, return 429 or 500, or hang past the client's
timeout. It validates every image part as a real base64 JPEG and records what it saw.

As vLLM 0.32 does, and held against it by tests/test_vllm_contract.py:
- a request with ``media_io_kwargs`` gets vLLM's 400 unless ``trust_request_mm_kwargs`` (the
  server's ``--trust-request-mm-kwargs``);
- ``limits`` (``--limit-mm-per-prompt``) caps the parts of each modality, with vLLM's 400.

Two more modes for the multimodal API, both off by default:
- ``validate``: every content part is checked against vLLM's chat schema (``text``,
  ``image_url``, ``video_url``, ``input_audio``, ``audio_url``: required keys, data URL
  prefixes, base64 that decodes, JPEG frames that PIL opens, WAV that soundfile reads) and the
  request's ``media_io_kwargs``; a bad part gets a 400 naming it, as vLLM answers.
- ``refuse_video``: a request with a ``video_url`` part gets vLLM's 400 for a model that does
  not take video (its video limit is 0).

Hostile answers (issue 43), for the client's defences: a request whose prompt holds
``fault:<name>`` gets the fault of that name from ``HOSTILE`` (so a test picks each item's
fault by its title, whatever order the requests arrive in); the same names work in ``script``.
They echo credentials (the Authorization header the server got and ``echo``, what a gateway
knows), send answers that are badly typed, too long, not JSON or not UTF-8, drip, never end,
or come compressed.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import soundfile
from PIL import Image, UnidentifiedImageError

# vLLM's content part types (vllm/entrypoints/chat_utils.py) and the key each one nests its
# payload under; media_io_kwargs is keyed by modality.
PART_KEYS = {
    "text": "text",
    "image_url": "image_url",
    "video_url": "video_url",
    "input_audio": "input_audio",
    "audio_url": "audio_url",
}
MODALITIES = {"image", "video", "audio"}
MODALITY_OF_PART = {"image_url": "image", "video_url": "video"}
MODALITY_OF_PART |= {"input_audio": "audio", "audio_url": "audio"}
# vLLM 0.32's own messages (vllm/entrypoints/generate/base/protocol.py, multimodal limits)
UNTRUSTED_KWARGS = (
    "Per-request media_io_kwargs are disabled by default because they can change multimodal "
    "media loading resource usage. Start the server with --trust-request-mm-kwargs only when "
    "clients are trusted. (parameter=media_io_kwargs)"
)


def over_limit(modality: str, allowed: int) -> str:
    return f"At most {allowed} {modality}(s) may be provided in one prompt. (parameter={modality})"


REFUSED_VIDEO = over_limit("video", 0)


class LoopbackServer:
    """A threading HTTP server on 127.0.0.1, serving in a thread while used as a context. Its
    handler class reaches this object as the attribute ``owner_name``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner_name: str):
        bound = type(handler.__name__, (handler,), {owner_name: self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeOpenAI(LoopbackServer):
    def __init__(
        self,
        api_key: str | None = None,
        served_model: str = "served/vlm-7b",
        trust_request_mm_kwargs: bool = False,
        limits: dict[str, int] | None = None,
    ):
        self.api_key = api_key
        self.trust_request_mm_kwargs = trust_request_mm_kwargs
        self.limits = limits or {}
        self.served_model = served_model
        # Actions for the next requests: ok, 429, 500, hang, or echo_auth (a 400 whose message
        # repeats the Authorization header, as careless gateways do).
        self.script: list[str] = []
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.hang_s = 3.0
        self.delay_s = 0.0
        self.capacity: int | None = None  # see serve_with_capacity
        self.slots: threading.Semaphore | None = None
        self.occupancy: list[tuple[float, int]] = []  # (monotonic time, slots busy after it)
        self.validate = False  # check every part against vLLM's schema; 400 on a bad one
        self.refuse_video = False  # 400 to any request with a video_url part
        self.echo: list[str] = []  # what the echo faults repeat besides the Authorization header
        self.sent_bytes: dict[str, int] = {}  # body bytes a dripping or endless fault got out
        self.ended_at: dict[str, float] = {}  # when each such fault saw the client gone
        self.fault_limit_s = 60.0  # a dripping or endless fault stops by itself after this
        super().__init__(_Handler, "fake")

    def serve_with_capacity(self, slots: int, hold_s: float) -> None:
        """A load model of a model server in steady state (vLLM's continuous batch):
        ``slots`` requests are served at once (its max_num_seqs), each held ``hold_s``; more
        wait in its queue. ``occupancy`` records every change of the busy slots."""
        self.capacity, self.delay_s = slots, hold_s
        self.slots = threading.Semaphore(slots)

    def hold(self) -> None:
        """Serve one request for ``delay_s``, in a slot when the capacity is bounded."""
        if self.slots is None:
            time.sleep(self.delay_s)
            return
        with self.slots:
            self._occupy(+1)
            time.sleep(self.delay_s)
            self._occupy(-1)

    def _occupy(self, change: int) -> None:
        with self.lock:
            busy = (self.occupancy[-1][1] if self.occupancy else 0) + change
            self.occupancy.append((time.monotonic(), busy))

    def refusal(self, body: dict, parts: list[dict]) -> str | None:
        """vLLM's 400s for what its flags do not allow, checked before the parts are read."""
        if body.get("media_io_kwargs") and not self.trust_request_mm_kwargs:
            return UNTRUSTED_KWARGS
        limits = {**self.limits, **({"video": 0} if self.refuse_video else {})}
        for modality, allowed in limits.items():
            if sum(MODALITY_OF_PART.get(p.get("type")) == modality for p in parts) > allowed:
                return over_limit(modality, allowed)
        return None

    def next_action(self, body: dict) -> str:
        """The fault a ``fault:<name>`` in the request's text asks for, else the script's next
        action, else ok."""
        texts = [
            part.get("text", "") if isinstance(part, dict) else str(part)
            for message in body["messages"]
            for part in (message["content"] if isinstance(message["content"], list) else [])
        ]
        if named := FAULT_MARK.search(" ".join(texts)):
            return named.group(1)
        with self.lock:
            return self.script.pop(0) if self.script else "ok"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        fake = self.fake
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._answer(fake)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _answer(self, fake: FakeOpenAI) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        parts = [
            part
            for message in body["messages"]
            if isinstance(message["content"], list)
            for part in message["content"]
        ]
        if problem := fake.refusal(body, parts):
            with fake.lock:
                fake.requests.append({"auth": auth, "body": body, "problem": problem})
            return self._send(400, vllm_error(problem))
        if fake.validate and (problem := schema_problem(body)):
            with fake.lock:
                fake.requests.append({"auth": auth, "body": body, "problem": problem})
            return self._send(400, vllm_error(problem))
        images = [_check_jpeg(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
        videos = [lenient(video_summary, part) for part in parts if part["type"] == "video_url"]
        audio = [lenient(audio_summary, part) for part in parts if part["type"] in AUDIO_TYPES]
        seen = {"auth": auth, "images": images, "videos": videos, "audio": audio, "body": body}
        with fake.lock:
            fake.requests.append({**seen, "query": urlsplit(self.path).query})
        if urlsplit(self.path).path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if fake.api_key and auth != f"Bearer {fake.api_key}":
            return self._send(401, {"error": {"message": "bad key"}})
        action = fake.next_action(body)
        fake.hold()
        if action in HOSTILE:
            return HOSTILE[action](self, body, auth)
        if action == "hang":
            time.sleep(fake.hang_s)
            return self._send(200, {"choices": []})
        if action == "echo_auth":
            return self._send(400, {"error": {"message": f"credential {auth} not allowed"}})
        if action in ("429", "500"):
            return self._send(
                int(action),
                {"error": {"message": f"scripted {action}"}},
                {"Retry-After": "0"} if action == "429" else {},
            )
        title = next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")
        shown = len(images) + sum(v.get("frames", 0) for v in videos)
        text = f"a clip with {shown} frames about {title.split('title: ')[1].splitlines()[0]}."
        self._send(
            200,
            {
                "id": "x",
                "model": fake.served_model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 100 + shown,
                    "completion_tokens": 17,
                    "total_tokens": 117,
                },
            },
        )

    def good_answer(self, body: dict, content: object, **changes: object) -> dict:
        """An ok answer's body with ``content`` and top-level ``changes`` (``usage`` and
        ``finish_reason`` reach into their places)."""
        answer = {
            "id": "x",
            "model": self.fake.served_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": changes.pop("finish_reason", "stop"),
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 17, "total_tokens": 117},
        }
        answer["usage"].update(changes.pop("usage", {}))
        return {**answer, **changes}

    def _send_bytes(self, status: int, data: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _trickle(self, action: str, head: bytes, chunk: bytes, pause_s: float) -> None:
        """Write ``head``, then ``chunk`` after ``chunk`` every ``pause_s`` until the client is
        gone (or ``fault_limit_s`` passed), counting the bytes that got out."""
        fake, sent, started = self.fake, 0, time.monotonic()
        try:
            self.wfile.write(head)
            while time.monotonic() - started < fake.fault_limit_s:
                self.wfile.write(chunk)
                sent += len(chunk)
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        with fake.lock:
            fake.sent_bytes[action] = fake.sent_bytes.get(action, 0) + sent
            fake.ended_at[action] = time.monotonic()

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): fine


FAULT_MARK = re.compile(r"fault:([a-z0-9_]+)")


def _echoed(handler: _Handler, auth: str | None) -> str:
    return " ".join([f"authorization={auth}", *handler.fake.echo])


def _title(body: dict) -> str:
    text = next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")
    return text.split("title: ")[1].splitlines()[0]


def _answer_with(**changes: object):
    """A fault that is a good answer but for ``changes`` (``content`` replaces the text)."""

    def send(handler: _Handler, body: dict, auth: str | None) -> None:
        rest = {key: value for key, value in changes.items() if key != "content"}
        content = changes.get("content", f"a clip with 0 frames about {_title(body)}.")
        handler._send(200, handler.good_answer(body, content, **rest))

    return send


def _echo_answer(handler: _Handler, body: dict, auth: str | None) -> None:
    text = f"a clip about {_title(body)}. The gateway saw {_echoed(handler, auth)} today."
    handler._send(200, handler.good_answer(body, text))


def _echo_error(handler: _Handler, body: dict, auth: str | None) -> None:
    handler._send(500, {"error": {"message": f"upstream refused {_echoed(handler, auth)}"}})


def _parts(handler: _Handler, body: dict, auth: str | None) -> None:
    parts = [{"type": "text", "text": f"a clip about {_title(body)}."}]
    parts.append({"type": "text", "text": "It is told in two parts."})
    handler._send(200, handler.good_answer(body, parts))


def _controls(handler: _Handler, body: dict, auth: str | None) -> None:
    text = f"a clip\x00 about\x1b[2J {_title(body)}\x9b.\u202e It\u2066 ends\ud800 here.\x07"
    handler._send(200, handler.good_answer(body, text))


def _long_answer(handler: _Handler, body: dict, auth: str | None) -> None:
    """An answer longer than max_tokens tokens can be (128 bytes a token), under the body cap."""
    words = "word " * (body["max_tokens"] * 128 // 5 + 10)
    handler._send(200, handler.good_answer(body, f"a clip about {_title(body)}. {words}"))


def _huge_answer(handler: _Handler, body: dict, auth: str | None) -> None:
    handler._send(200, handler.good_answer(body, "x" * 20_000_000))


def _raw(data: bytes, **headers: str):
    def send(handler: _Handler, body: dict, auth: str | None) -> None:
        handler._send_bytes(200, data, headers)

    return send


def _gzipped(handler: _Handler, body: dict, auth: str | None) -> None:
    data = gzip.compress(json.dumps(handler.good_answer(body, "a gzipped answer")).encode())
    handler._send_bytes(200, data, {"Content-Encoding": "gzip"})


def _drip(handler: _Handler, body: dict, auth: str | None) -> None:
    """Headers, then a valid-looking body one byte a second."""
    head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    handler._trickle("drip", head, b" ", 1.0)


def _drip_headers(handler: _Handler, body: dict, auth: str | None) -> None:
    """The status line and headers themselves, one byte a second: no first byte of the body."""
    handler._trickle("drip_headers", b"H", b"T", 1.0)


def _endless(handler: _Handler, body: dict, auth: str | None) -> None:
    """A 200 without a length whose body never ends, as fast as the client takes it."""
    head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
    handler._trickle("endless", head + b'{"choices": [{"message": {"content": "', b"x" * 65536, 0)


def _silent(handler: _Handler, body: dict, auth: str | None) -> None:
    """Accepts and never answers, until the client hangs up (or fault_limit_s passed)."""
    fake, started = handler.fake, time.monotonic()
    handler.connection.settimeout(0.2)
    while time.monotonic() - started < fake.fault_limit_s:
        try:
            if handler.connection.recv(1) == b"":
                break  # the client closed its end
        except TimeoutError:
            continue
        except OSError:
            break
    with fake.lock:
        fake.ended_at["silent"] = time.monotonic()


HOSTILE = {
    "echo_answer": _echo_answer,
    "echo_error": _echo_error,
    "usage_overflow": _answer_with(usage={"prompt_tokens": 10**30}),
    "usage_negative": _answer_with(usage={"completion_tokens": -5}),
    "usage_text": _answer_with(usage={"completion_tokens": "many"}),
    "usage_float": _answer_with(usage={"prompt_tokens": 1e300}),
    "model_object": _answer_with(model={"name": "served/vlm"}),
    "model_list": _answer_with(model=["a", "b"]),
    "content_number": _answer_with(content=12345),
    "content_image_part": _answer_with(content=[{"type": "image_url", "image_url": {"url": "x"}}]),
    "no_choices": _answer_with(choices=[]),
    "finish_reason_object": _answer_with(finish_reason={"why": "stop"}),
    "parts": _parts,
    "length": _answer_with(finish_reason="length"),
    "controls": _controls,
    "long_answer": _long_answer,
    "huge_answer": _huge_answer,
    "truncated_json": _raw(b'{"choices": [{"message": {"content": "a clip ab'),
    "bad_utf8": _raw(b'{"choices": [{"message": {"content": "a clip \xff\xfe about"}}]}'),
    "not_json": _raw(b"<html>502 Bad Gateway</html>"),
    "deep_json": _raw(b"[" * 100_000),
    "gzip": _gzipped,
    "drip": _drip,
    "drip_headers": _drip_headers,
    "endless": _endless,
    "silent": _silent,
}


def _check_jpeg(url: str) -> tuple[int, int]:
    """Decode a data URL; it must be a real JPEG. Returns its size."""
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :], validate=True)))
    assert image.format == "JPEG"
    return image.size


AUDIO_TYPES = ("input_audio", "audio_url")


class BadPart(ValueError):
    """A content part vLLM would refuse; its message says which and why."""


def vllm_error(message: str) -> dict:
    return {"error": {"message": message, "type": "BadRequestError", "code": 400}}


def schema_problem(body: dict) -> str | None:
    """Why vLLM would refuse this request's content parts or media_io_kwargs; None if fine."""
    try:
        for message in body["messages"]:
            content = message["content"]
            if isinstance(content, list):
                for index, part in enumerate(content):
                    check_part(part, index)
            elif not isinstance(content, str):
                raise BadPart(f"{message['role']} content is neither a string nor a part list")
        check_media_io_kwargs(body.get("media_io_kwargs"))
    except BadPart as exc:
        return str(exc)
    return None


def check_part(part: dict, index: int) -> None:
    kind = part.get("type")
    if kind not in PART_KEYS:
        raise BadPart(f"part {index}: unknown part type {kind!r}")
    if PART_KEYS[kind] not in part:
        raise BadPart(f"part {index}: a {kind} part needs a {PART_KEYS[kind]!r} key")
    if kind == "text":
        if not isinstance(part["text"], str):
            raise BadPart(f"part {index}: text must be a string")
    elif kind == "image_url":
        jpeg_size(payload_of(url_of(part, "image_url"), "data:image/jpeg;base64,"))
    elif kind == "video_url":
        video_summary(part)
    else:
        audio_summary(part)


def url_of(part: dict, key: str) -> str:
    url = part[key].get("url") if isinstance(part[key], dict) else None
    if not isinstance(url, str):
        raise BadPart(f"a {key} part needs {{'url': str}}")
    return url


def payload_of(url: str, prefix: str) -> bytes:
    if not url.startswith(prefix):
        raise BadPart(f"expected a {prefix}... data URL, got {url[:32]!r}")
    return b64(url[len(prefix) :])


def b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadPart(f"base64 does not decode: {exc}") from None


def jpeg_size(data: bytes) -> tuple[int, int]:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadPart("not an image") from None
    if image.format != "JPEG":
        raise BadPart(f"a {image.format} image where a JPEG belongs")
    return image.size


def video_summary(part: dict) -> dict:
    """vLLM's ``video/jpeg`` form: base64 JPEG frames joined by commas (VideoMediaIO)."""
    url = url_of(part, "video_url")
    prefix = "data:video/jpeg;base64,"
    if not url.startswith(prefix):
        raise BadPart(f"expected a {prefix}<frame>,<frame>,... data URL, got {url[:32]!r}")
    sizes = [jpeg_size(b64(frame)) for frame in url[len(prefix) :].split(",")]
    return {"frames": len(sizes), "sizes": sizes}


def audio_summary(part: dict) -> dict:
    """``input_audio`` {data, format} or ``audio_url`` with a WAV data URL."""
    if part["type"] == "input_audio":
        spec = part["input_audio"]
        if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
            raise BadPart("an input_audio part needs {'data': base64 str, 'format': str}")
        if spec.get("format") not in ("wav", "mp3"):
            raise BadPart(f"input_audio format must be wav or mp3, not {spec.get('format')!r}")
        data = b64(spec["data"])
    else:
        data = payload_of(url_of(part, "audio_url"), "data:audio/wav;base64,")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    except soundfile.LibsndfileError as exc:
        raise BadPart(f"audio does not parse: {exc}") from None
    info = soundfile.info(io.BytesIO(data))
    return {"samples": len(samples), "rate": rate, "subtype": info.subtype, "waveform": samples}


def check_media_io_kwargs(kwargs: object) -> None:
    if kwargs is None:
        return
    if not isinstance(kwargs, dict) or not all(isinstance(v, dict) for v in kwargs.values()):
        raise BadPart("media_io_kwargs must map a modality to a dict of settings")
    if unknown := set(kwargs) - MODALITIES:
        raise BadPart(f"media_io_kwargs has unknown modalities {sorted(unknown)}")
    video = kwargs.get("video", {})
    fps = video.get("fps", 1)
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise BadPart(f"media_io_kwargs.video.fps must be a positive number, not {fps!r}")
    frames = video.get("num_frames", 32)
    if not isinstance(frames, int) or frames == 0 or frames < -1:
        raise BadPart("media_io_kwargs.video.num_frames must be > 0 or -1")


def lenient(summary, part: dict) -> dict:
    """Outside validate mode a bad video or audio part is recorded, not refused."""
    try:
        return summary(part)
    except (BadPart, KeyError, TypeError, AttributeError) as exc:
        return {"error": str(exc)}
