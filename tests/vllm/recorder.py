"""A recording pass-through in front of a real server: each POST body and the status the server
answered it with, so a test reads what the client really sent and what the server took."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import httpx

from tests.fake_openai_server import LoopbackServer


class Recorder(LoopbackServer):
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.exchanges: list[tuple[dict, int]] = []  # (request body, upstream status)
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=300)
        super().__init__(_Forward, "recorder")

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.client.close()


class _Forward(BaseHTTPRequestHandler):
    recorder: Recorder

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        data = self.rfile.read(int(self.headers["Content-Length"]))
        reply = self.recorder.client.post(
            self.recorder.upstream + self.path,
            content=data,
            headers={"Content-Type": "application/json"},
        )
        with self.recorder.lock:
            self.recorder.exchanges.append((json.loads(data), reply.status_code))
        self.send_response(reply.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)
