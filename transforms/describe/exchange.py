"""One POST to the describer endpoint, bounded in time and in bytes.

httpx's timeout bounds each network operation, not the request: a server that sends a byte a
second keeps every read short and the request alive for ever, and a body that never ends grows
memory without limit. ``post_bounded`` bounds both:

- a deadline for the whole exchange (connect, send, first byte, body): a timer shuts the
  request's socket down when it passes, which ends whatever read or write is blocked on it
  (the socket comes from httpx's documented ``trace`` extension when the connection opens);
- a byte cap on the body, read as a stream: a ``Content-Length`` over the cap is refused
  before reading, and a body that grows past it is dropped at the cap.

Each request has a connection of its own (the client keeps none alive), so the timer can only
ever cut its own request. The body is asked for uncompressed (``Accept-Encoding: identity``)
and a compressed one is refused, so the cap counts the bytes that are parsed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from transforms.stage import StageError

OPENED = ("connection.connect_tcp.complete", "connection.start_tls.complete")
ERROR_BODY_BYTES = 64 * 1024  # what is read of a refusal: its reason is quoted, not stored


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Cutoff:
    """Shuts down the sockets of one request when its deadline passes."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.passed = threading.Event()
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.cut)
        self._timer.daemon = True

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` callback: keep each stream the request opens."""
        if event in OPENED:
            self.watch(info.get("return_value"))

    def watch(self, stream: Any) -> None:
        with self._lock:
            if stream is not None:
                self._streams.append(stream)
            late = self.passed.is_set()
        if late:
            self.cut()

    def cut(self) -> None:
        self.passed.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            sock = stream.get_extra_info("socket")
            # wakes a blocked recv or send at once; a socket already closed ended its request
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Cutoff:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def post_bounded(
    client: Any,
    url: str,
    *,
    payload: dict[str, Any],
    headers: dict[str, str],
    deadline_s: float,
    max_bytes: int,
) -> Reply:
    """POST ``payload`` and read the reply within ``deadline_s`` and ``max_bytes``.

    A passed deadline is ``StageError("describe_timeout")``; a 200 body over ``max_bytes`` or
    compressed is ``StageError("describe_failed")``; an error body is cut at
    ``ERROR_BODY_BYTES`` (only its start is quoted). httpx's transport errors pass through."""
    import httpx

    headers = {**headers, "Accept-Encoding": "identity"}
    with Cutoff(deadline_s) as cutoff:
        try:
            with client.stream(
                "POST",
                url,
                json=payload,
                headers=headers,
                timeout=httpx.Timeout(deadline_s),
                extensions={"trace": cutoff.trace},
            ) as response:
                cutoff.watch(response.extensions.get("network_stream"))
                cap = max_bytes if response.status_code == 200 else ERROR_BODY_BYTES
                body = read_body(response, cap, strict=response.status_code == 200)
        except httpx.TransportError:
            if cutoff.passed.is_set():
                raise deadline_passed(deadline_s) from None
            raise
        if cutoff.passed.is_set():  # a body without a length ends where the cut ended it
            raise deadline_passed(deadline_s)
    return Reply(response.status_code, dict(response.headers), body)


def read_body(response: Any, cap: int, *, strict: bool) -> bytes:
    """The body, at most ``cap`` bytes. ``strict``: more is ``describe_failed``; else the
    start is kept and the rest left unread."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if strict and encoding not in ("", "identity"):
        raise StageError(
            "describe_failed",
            f"the endpoint sent a {encoding[:32]}-encoded answer, though the request asked "
            "for none (Accept-Encoding: identity)",
        )
    declared = response.headers.get("content-length", "")
    if strict and declared.isdigit() and int(declared) > cap:
        raise too_large(f"declares {int(declared):,} bytes", cap)
    chunks, size = [], 0
    for chunk in response.iter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            if strict:
                raise too_large(f"went past {cap:,} bytes", cap)
            break
    return b"".join(chunks)[:cap]


def too_large(what: str, cap: int) -> StageError:
    return StageError(
        "describe_failed",
        f"the endpoint's answer {what}: more than an answer of describe.max_new_tokens tokens "
        f"can take ({cap:,} bytes); dropped unread",
    )


def deadline_passed(deadline_s: float) -> StageError:
    return StageError(
        "describe_timeout",
        f"no complete answer within describe.timeout_s={deadline_s:g} s (connect, send, "
        "first byte and body)",
    )
