"""One redaction path for everything that stores or prints config, messages or logs.

Secrets reach the pipeline through the environment only (``describe.api_key_env`` names a
variable; S3 credentials come from ``AWS_*``). Still, a key can be pasted where a name
belongs, put into an endpoint URL, or echoed back by a server. ``redact_config`` masks
secret-looking config values and URL credentials before a config is stored (``runs``, the
report) or hashed into a stored fingerprint; ``redact_text`` masks the values of the secret
variables in use and well-known key shapes in any text (error rows, CLI errors, log lines).
``shown`` escapes the control characters of user data (ids, titles, URIs, messages) before a
terminal or a log sees them: an ESC sequence could clear the screen or retitle the window;
``strip_controls`` removes them from text that is stored (a model's answer).

A describer endpoint can echo what it was sent: ``register_secret`` adds a credential the
process holds (the API key, the endpoint URL's user:password) to what ``redact_text`` masks,
in the forms a server would echo it (as is, percent-encoded, base64 as in ``Basic``), and
``redact_text`` masks any ``Authorization`` value (``Bearer``/``Basic`` and its token).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Config keys whose values are secrets themselves (``*_env`` keys only name a variable).
SECRET_KEY = re.compile(r"(?i)secret|password|passwd|token|api_?key|access_?key|credential")
SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# Shapes of common API keys: OpenAI/Anthropic-style sk-, Hugging Face, GitHub, AWS, bearer.
KEY_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{16,}"
    r"|A(?:KIA|SIA)[0-9A-Z]{16})\b"
)
# An Authorization value as a server echoes it: the scheme, then its token.
AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic)([ \t]+)([A-Za-z0-9._~+/\-]{6,}=*)")
MIN_SECRET_CHARS = 4  # shorter registered values would mask ordinary words
_secret_env_names: set[str] = set(SECRET_ENV_VARS)
_secret_values: frozenset[str] = frozenset()  # replaced whole: readers never see it change
# C0 and C1 controls (ESC included), DEL, the bidirectional marks and overrides that reorder
# text, and lone surrogates (not Unicode text: no UTF-8 writer or terminal takes them).
# A terminal escape sequence whole (CSI: ESC [ or C1 0x9b ... final byte; OSC: ESC ] ... BEL or
# ST), so stripping leaves no "[2J" behind.
ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
CONTROL_CHARS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def register_secret_env(name: str | None) -> None:
    """Mask the value of this environment variable wherever ``redact_text`` runs."""
    if name and ENV_NAME.fullmatch(name):
        _secret_env_names.add(name)


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever ``redact_text`` runs: as is, percent-encoded, and base64
    (padded or not), the forms a server echoes a credential in."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    encoded = base64.b64encode(value.encode()).decode()
    global _secret_values
    _secret_values = _secret_values | {value, quote(value, safe=""), encoded, encoded.rstrip("=")}


def endpoint_credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) of ``url``'s userinfo, percent-decoded; None without one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" not in parts.netloc:
        return None
    user, _, password = parts.netloc.rsplit("@", 1)[0].partition(":")
    return unquote(user), unquote(password)


def register_endpoint_credentials(url: str) -> None:
    """Mask the userinfo of ``url`` (``user:password`` and the password; the user alone when
    it carries no password, a token in the user's place), in ``register_secret``'s forms."""
    if credentials := endpoint_credentials(url):
        user, password = credentials
        register_secret(urlsplit(url).netloc.rsplit("@", 1)[0])  # as written, still encoded
        register_secret(f"{user}:{password}")
        register_secret(password or user)


def looks_like_env_name(value: str) -> bool:
    """A conventional variable name (OPENAI_API_KEY), safe to echo in a message. A long name
    without underscores may be a pasted key that happens to be alphanumeric."""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", value)) and ("_" in value or len(value) <= 16)


def shown_env_name(value: str) -> str:
    return f"${value}" if looks_like_env_name(value) else "(a variable name not shown here)"


def redact_text(text: str) -> str:
    """``text`` with the values of secret variables and key-shaped strings masked."""
    if not text:
        return text
    values = {os.environ.get(name) for name in _secret_env_names} | _secret_values
    for value in sorted(filter(None, values), key=len, reverse=True):  # longest forms first
        if len(value) >= MIN_SECRET_CHARS:
            text = text.replace(value, MASK)
    return AUTH_VALUE.sub(_masked_auth, KEY_SHAPES.sub(MASK, text))


def _masked_auth(match: re.Match) -> str:
    """An Authorization value with its token masked. ``Bearer`` as the header writes it masks
    any token; in other cases (prose: "a basic recipe") only a token with a digit, or one that
    decodes as base64 ``user:password``."""
    scheme, space, token = match.groups()
    if scheme == "Bearer" or any(c.isdigit() for c in token) or _is_basic_pair(token):
        return f"{scheme}{space}{MASK}"
    return match.group()


def _is_basic_pair(token: str) -> bool:
    """``token`` decodes as base64 to printable text holding a ':' (as ``user:password``
    does; a word of prose decodes to bytes that are not)."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode()
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def strip_controls(text: str, keep: str = "\n\r\t") -> str:
    """``text`` without the characters ``shown`` escapes, but those in ``keep``, and without
    terminal escape sequences whole: what is stored from a model (a NUL, an ESC sequence, a
    bidi override) never reaches a table."""
    text = ESCAPE_SEQUENCE.sub("", text)
    return CONTROL_CHARS.sub(lambda m: m.group() if m.group() in keep else "", text)


def shown(value: object, keep: str = "") -> str:
    """``str(value)`` safe to print: each control character becomes its escape (``\\x1b``,
    ``\\x9b``, ``\\u202e``), except those in ``keep`` (a whole message's own newlines)."""

    def escape(match: re.Match) -> str:
        char = match.group()
        if char in keep:
            return char
        if char in SHORT_ESCAPES:
            return SHORT_ESCAPES[char]
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return CONTROL_CHARS.sub(escape, str(value))


def redact_url(url: str) -> str:
    """A URL without its user:password and with secret-named query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = urlencode(
        [(k, MASK if SECRET_KEY.search(k) else v) for k, v in parse_qsl(parts.query, True)]
    )
    return redact_text(urlunsplit(parts._replace(netloc=netloc, query=query)))


def redact_config(value: Any, key: str = "") -> Any:
    """A copy of a (JSON-like) config with secret values masked, recursively."""
    if isinstance(value, dict):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_config(v, key) for v in value]
    if not isinstance(value, str):
        return value
    if key.endswith("_env"):
        return value if looks_like_env_name(value) else MASK
    if SECRET_KEY.search(key):
        return MASK
    return redact_url(value) if "://" in value else redact_text(value)


class RedactingFilter(logging.Filter):
    """Masks secrets and escapes control characters in every log record that passes a
    handler (its lines and indentation stay)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = shown(redact_text(message), keep="\n\t")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            trace = logging.Formatter().formatException(record.exc_info)
            record.exc_text = shown(redact_text(trace), keep="\n\t")
        return True


def install_log_redaction() -> None:
    """Add ``RedactingFilter`` to every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
