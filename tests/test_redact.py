"""Issue 43 item 2 and 12, the redaction helpers themselves: a registered credential is masked
in every form a server echoes it, an Authorization value is masked without masking prose, and
stored model text loses its control characters but keeps its lines."""

import base64
import uuid
from urllib.parse import quote

import pytest

from core.redact import (
    endpoint_credentials,
    redact_text,
    register_endpoint_credentials,
    register_secret,
    strip_controls,
)


def test_a_registered_secret_is_masked_as_is_percent_encoded_and_base64():
    secret = f"s3cr/{uuid.uuid4().hex[:12]}+é"
    register_secret(secret)
    encoded = base64.b64encode(secret.encode()).decode()
    for form in (secret, quote(secret, safe=""), encoded, encoded.rstrip("=")):
        assert redact_text(f"echo: {form}!") == "echo: ***!", form


def test_short_values_are_not_registered_so_words_survive():
    register_secret("pw")
    assert redact_text("a pw b") == "a pw b"


def test_endpoint_userinfo_is_masked_in_every_form_and_a_token_user_alone():
    password = f"p@ss:{uuid.uuid4().hex[:8]}"
    url = f"https://gw-user:{quote(password, safe='')}@gw.example/v1"
    assert endpoint_credentials(url) == ("gw-user", password)
    register_endpoint_credentials(url)
    pair = f"gw-user:{password}"
    for form in (
        pair,
        password,
        f"gw-user:{quote(password, safe='')}",
        base64.b64encode(pair.encode()).decode(),
    ):
        assert form not in redact_text(f"saw {form}"), form
    assert redact_text("gw-user logged in") == "gw-user logged in"  # a user beside a password
    token = f"tok{uuid.uuid4().hex}"
    register_endpoint_credentials(f"https://{token}@gw.example/v1")  # the token is the user
    assert token not in redact_text(f"saw {token}")
    assert endpoint_credentials("http://gw.example/v1") is None


@pytest.mark.parametrize(
    "text, masked",
    [
        ("Authorization: Bearer sk-abc12345678", "Authorization: Bearer ***"),
        ("authorization: bearer abcdef123456", "authorization: bearer ***"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
        ("basic dXNlcjpwYXNzd29yZA", "basic ***"),  # lower case, no padding
        ("a basic recipe with tomatoes", "a basic recipe with tomatoes"),
        ("the Bearer bonds", "the Bearer bonds"),
        ("bearer instruments", "bearer instruments"),
    ],
)
def test_authorization_values_are_masked_and_prose_is_not(text, masked):
    assert redact_text(text) == masked


def test_stored_text_loses_controls_escape_sequences_and_bidi_but_keeps_lines():
    text = "a\x00b\x1b[31mred\x1b[0m\x9b2Kc\x1b]0;title\x07d\u202ee\u2066f\u061cg\ud800h\n\ti\r\x7f"
    assert strip_controls(text) == "abredcdefgh\n\ti\r"


def test_prose_after_basic_is_kept_even_when_it_is_valid_base64():
    """'OpenAI' decodes as base64 to bytes holding a ':' byte, but not to text."""
    assert redact_text("a basic OpenAI server") == "a basic OpenAI server"
