"""A recording pass-through in front of a real server: each POST body and the status the server
answered it with, so a test reads what the client really sent and what the server took."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class Recorder:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.exchanges: list[tuple[dict, int]] = []  # (request body, upstream status)
        self.lock = threading.Lock()
        handler = type("Handler", (_Forward,), {"recorder": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.client = httpx.Client(timeout=300)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
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
