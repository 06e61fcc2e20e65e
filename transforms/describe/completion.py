"""What an OpenAI-compatible endpoint sends back, read as data and never trusted.

A chat completion's body is parsed from bytes and validated against ``ChatCompletion``, a
pydantic model of the OpenAI / vLLM response (vLLM ``ChatCompletionResponse`` in
``vllm/entrypoints/openai/protocol.py``): ``usage`` counts are integers in the range of their
Arrow columns, ``model`` and ``finish_reason`` are short strings, and ``content`` is a string
or a list of text parts. Anything else (not JSON, not UTF-8, a count of 10**30, an object
where the model's name belongs) is that item's ``describe_failed`` row with the reason: a
server's bad answer is data about the server, not a bug in this tool, so it is neither
retried nor shown with a traceback.

What is kept is cleaned at this boundary, so every table, report and summary downstream gets
the same text: control characters the model wrote are stripped (``strip_controls``) and
credentials the server echoes are masked (``redact_text``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.redact import redact_text, strip_controls
from transforms.stage import StageError

INT32_MAX = 2**31 - 1  # description_tokens and prompt_tokens are int32 columns
# The longest token of a real vocabulary is well under this (SmolLM2's 49,152 tokens: at most
# 81 bytes, a run of spaces; 6.8 on average; English text runs about 4 a token), so no answer
# of max_new_tokens tokens is ever longer than max_new_tokens * TEXT_BYTES_PER_TOKEN.
TEXT_BYTES_PER_TOKEN = 128
# JSON escapes a byte into at most 6 (a control character as \u00XX), and the envelope (ids,
# usage, vLLM's extra fields) is a few hundred bytes: the body cap leaves room for both.
JSON_ESCAPE_FACTOR = 6
ENVELOPE_BYTES = 64 * 1024
MODEL_CHARS = 512
PART_SEPARATOR = "\n"  # as vLLM joins a message's text parts (chat_utils)
REASON_ERRORS = 3

Tokens = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)]


def text_cap(max_new_tokens: int) -> int:
    """The most UTF-8 bytes an answer of ``max_new_tokens`` tokens can hold."""
    return max_new_tokens * TEXT_BYTES_PER_TOKEN


def body_cap(max_new_tokens: int) -> int:
    """The most bytes a chat completion body with such an answer can take."""
    return ENVELOPE_BYTES + text_cap(max_new_tokens) * JSON_ESCAPE_FACTOR


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # servers add fields (vLLM: prompt_logprobs, ...)


class Usage(_Lenient):
    prompt_tokens: Tokens = 0
    completion_tokens: Tokens = 0
    total_tokens: Tokens | None = None


class Message(_Lenient):
    content: Annotated[str, Field(strict=True)] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _joined_text_parts(cls, value: Any) -> Any:
        """A list of text parts is their text, joined; any other list is refused."""
        if not isinstance(value, list):
            return value
        if all(_is_text_part(part) for part in value):
            return PART_SEPARATOR.join(part["text"] for part in value)
        raise ValueError("a content list must hold only text parts ({'type': 'text', 'text': str})")


class Choice(_Lenient):
    message: Message
    # stop, length, abort, tool_calls, eos_token (TGI), ...: an identifier, not free text
    finish_reason: Annotated[str, Field(strict=True, pattern=r"^[a-z0-9_]{1,32}$")] | None = None


class ChatCompletion(_Lenient):
    model: Annotated[str, Field(strict=True, max_length=MODEL_CHARS)] | None = None
    choices: list[Choice] = Field(min_length=1)
    usage: Usage | None = None


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


@dataclass(frozen=True)
class Completion:
    """One validated answer: its text (controls stripped, credentials masked), what the server
    says it ran and why it stopped, and its token counts."""

    text: str
    served_model: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def read_completion(body: bytes, *, max_new_tokens: int) -> Completion:
    """The answer in a 200 body, or ``StageError("describe_failed")`` saying what is wrong."""
    try:
        answer = ChatCompletion.model_validate(parsed_json(body))
    except ValidationError as exc:
        raise StageError("describe_failed", "the endpoint's answer " + invalid(exc)) from None
    choice, usage = answer.choices[0], answer.usage or Usage()
    text = choice.message.content
    if not text:
        raise StageError("describe_failed", "the endpoint's answer has no message content")
    size, cap = len(text.encode("utf-8", "surrogatepass")), text_cap(max_new_tokens)
    if size > cap:
        # Refused, not truncated: no answer of max_new_tokens tokens is this long, so the text
        # is not the model's answer under this config (a server or proxy that ignores
        # max_tokens, or pads the answer); its first part would be stored as if it were one.
        raise StageError(
            "describe_failed",
            f"the endpoint's answer is {size:,} bytes, more than describe.max_new_tokens="
            f"{max_new_tokens} tokens can hold ({cap:,} at {TEXT_BYTES_PER_TOKEN} bytes a "
            "token): refused, not truncated",
        )
    return Completion(
        text=cleaned(text),
        served_model=cleaned(answer.model) if answer.model is not None else None,
        finish_reason=choice.finish_reason,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )


def cleaned(text: str) -> str:
    """Server text fit to store: control characters stripped, then credentials masked."""
    return redact_text(strip_controls(text))


def parsed_json(body: bytes) -> Any:
    """``body`` as JSON, or ``StageError`` naming why not (truncated, not UTF-8, too deep)."""
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 (byte {exc.start} of {len(body):,})"
    except json.JSONDecodeError as exc:
        cut = exc.msg.startswith("Unterminated") or exc.pos >= len(exc.doc.rstrip())
        where = f"character {exc.pos} of {len(exc.doc):,}" + ("; cut short?" if cut else "")
        why = f"not JSON ({exc.msg}: {where})"
    except (ValueError, RecursionError) as exc:  # an int past the digit limit, deep nesting
        why = f"not JSON this reader takes ({type(exc).__name__})"
    raise StageError("describe_failed", f"the endpoint's answer is {why}")


def invalid(exc: ValidationError) -> str:
    """The first few reasons a body fails ``ChatCompletion``, without the values (a value can
    be megabytes, or a credential the server echoed)."""
    reasons = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:REASON_ERRORS]
    ]
    more = exc.error_count() - len(reasons)
    return (
        "does not fit the chat completion schema: "
        + "; ".join(reasons)
        + (f" (and {more} more)" if more > 0 else "")
    )
