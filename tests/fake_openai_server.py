"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions wire format.

It is scripted per request: answer normally, return 429 or 500, or hang past the client's
timeout. It validates every image part as a real base64 JPEG and records what it saw.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


class FakeOpenAI:
    def __init__(self, api_key: str | None = None, served_model: str = "served/vlm-7b"):
        self.api_key = api_key
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
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

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

    def next_action(self) -> str:
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
        images = [
            _check_jpeg(part["image_url"]["url"])
            for message in body["messages"]
            if isinstance(message["content"], list)
            for part in message["content"]
            if part["type"] == "image_url"
        ]
        with fake.lock:
            fake.requests.append({"auth": auth, "images": images, "body": body})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if fake.api_key and auth != f"Bearer {fake.api_key}":
            return self._send(401, {"error": {"message": "bad key"}})
        action = fake.next_action()
        fake.hold()
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
        text = (
            f"a clip with {len(images)} frames about {title.split('title: ')[1].splitlines()[0]}."
        )
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
                    "prompt_tokens": 100 + len(images),
                    "completion_tokens": 17,
                    "total_tokens": 117,
                },
            },
        )

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


def _check_jpeg(url: str) -> tuple[int, int]:
    """Decode a data URL; it must be a real JPEG. Returns its size."""
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :], validate=True)))
    assert image.format == "JPEG"
    return image.size
