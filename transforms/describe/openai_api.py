"""The ``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint.

vLLM, SGLang and TGI all serve this wire format. Frames go as base64 JPEG ``image_url`` parts.
Requests run on a bounded thread pool, with a timeout each, and 429 / 5xx / timeouts are
retried with exponential backoff (honouring ``Retry-After``). The API key is read from the
environment variable that config names; it is never logged and never written to a table.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from transforms.describe.base import Describer, pick_frames
from transforms.describe.prompt import RenderedPrompt
from transforms.errors import UsageError
from transforms.redact import redact_text, redact_url, shown_env_name
from transforms.stage import Record, StageError

logger = logging.getLogger(__name__)
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


def jpeg_data_url(frame: np.ndarray, quality: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class OpenAIDescriber(Describer):
    backend = "openai"
    resources = "cpu"  # the model runs in the server: the task's executor needs no GPU

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
        limits = httpx.Limits(max_connections=self.config.concurrency)
        self._model_client = httpx.Client(timeout=self.config.timeout_s, limits=limits)
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            **super().fingerprint_fields(),
            "endpoint": redact_url(self.config.endpoint),  # stored in runs: no credentials
            "jpeg_quality": self.config.jpeg_quality,
        }

    def stream_shape(self) -> tuple[int, int]:
        """One request per lane and ``concurrency`` lanes: the streaming runtime keeps that
        many requests in flight across batches and chunks, and its bounded queues are the
        backpressure."""
        return 1, self.config.concurrency

    def run_batch(self, records: list[Record]) -> None:
        if len(records) == 1:
            self._guard_item(records[0], self.describe_one, records[0])
            return
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(records))) as pool:
            list(pool.map(lambda r: self._guard_item(r, self.describe_one, r), records))

    def payload(self, record: Record, prompt: RenderedPrompt) -> dict[str, Any]:
        frames = pick_frames(record.get("frames") or [], self.config.max_images)
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": jpeg_data_url(f, self.config.jpeg_quality)}}
            for f in frames
        ]
        content.append({"type": "text", "text": prompt.user})
        messages = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": content},
        ]
        if prompt.answer_prefix:
            messages.append({"role": "assistant", "content": prompt.answer_prefix})
        return {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": self.config.max_new_tokens,
            "temperature": self.config.temperature,
            "seed": self.config.seed,
        }

    def describe_one(self, record: Record) -> None:
        started = time.perf_counter()
        prompt = self.render(record)
        body = self.post_with_retries(self.payload(record, prompt))
        try:
            text = body["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise StageError(
                "describe_failed", "response has no choices[0].message.content"
            ) from None
        usage = body.get("usage") or {}
        self.attach(
            record,
            prompt,
            f"{prompt.answer_prefix} {text}".strip(),
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            started=started,
            served_model=body.get("model"),
        )

    def post_with_retries(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST the chat request; retry 429/5xx/timeouts with exponential backoff and jitter."""
        import httpx

        url = self.config.endpoint.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        last, retry_after = "", None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
                retry_after = None
            try:
                response = self._model_client.post(url, json=payload, headers=headers)
            except httpx.TimeoutException:
                last = "timeout"
                continue
            except httpx.TransportError as exc:
                last = f"connection failed: {type(exc).__name__}"
                continue
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {redact_text(response.text[:200])}"
            if response.status_code not in RETRYABLE:
                raise StageError("describe_failed", last)
            retry_after = response.headers.get("retry-after")
        code = "describe_timeout" if last == "timeout" else "describer_unavailable"
        raise StageError(code, f"gave up after {self.config.max_retries + 1} attempts: {last}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            return min(MAX_BACKOFF_S, float(retry_after))
        base = self.config.backoff_s * 2 ** (attempt - 1)
        return min(MAX_BACKOFF_S, base * (0.5 + random.random()))
