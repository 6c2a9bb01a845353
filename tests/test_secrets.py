"""The redactor knows every form a secret travels in."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from stackprobe.secrets import REDACTED, Redactor

SECRET = 'p@ss "wörd"\n'


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        base64.b64encode(SECRET.encode()).decode(),
        repr(SECRET)[1:-1],
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
    ],
)
def test_each_form_of_a_secret_is_scrubbed(form: str) -> None:
    redactor = Redactor([SECRET])

    assert redactor(f"before {form} after") == f"before {REDACTED} after"


def test_a_url_secret_scrubs_its_password_and_basic_auth_header_too() -> None:
    redactor = Redactor(["https://probe:CANARY-pw@api.example.com/health"])
    header = base64.b64encode(b"probe:CANARY-pw").decode()

    assert redactor("password CANARY-pw leaked") == f"password {REDACTED} leaked"
    assert redactor(f"Authorization: Basic {header}") == f"Authorization: Basic {REDACTED}"


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    redactor = Redactor(["abc", "abcdef"])

    assert redactor("x abcdef y abc") == f"x {REDACTED} y {REDACTED}"
