"""The redactor knows every form a secret travels in, scrubs a long secret wherever it stands
and a short or common one where it stands as a credential, and never garbles the rest."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import asyncpg
import botocore.exceptions
import httpx
import pytest

from stackprobe.app import App
from stackprobe.config import parse_config
from stackprobe.probes import KINDS
from stackprobe.probes._resp import error_reply
from stackprobe.secrets import REDACTED, Redactor, weakness
from stackprobe.server import make_web_app
from tests.support.web_client import WebClient

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
    redactor = Redactor(["CANARY-abc1", "CANARY-abc1-def2"])

    assert redactor("x CANARY-abc1-def2 y CANARY-abc1") == f"x {REDACTED} y {REDACTED}"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("leaked: CANARY-tok-9f2e.", "leaked: <redacted>."),
        ("(CANARY-tok-9f2e)", "(<redacted>)"),
        ('{"k": "CANARY-tok-9f2e"}', '{"k": "<redacted>"}'),
        ("next=%2FCANARY-tok-9f2e", "next=%2F<redacted>"),  # an escape's letters in front
        ("line one\\nCANARY-tok-9f2e", "line one\\n<redacted>"),
        # inside a longer word it is another value, and scrubbing there garbles
        ("xCANARY-tok-9f2e CANARY-tok-9f2e0", "xCANARY-tok-9f2e CANARY-tok-9f2e0"),
    ],
)
def test_a_long_secret_is_scrubbed_anywhere_as_a_whole_token(text: str, scrubbed: str) -> None:
    assert Redactor(["CANARY-tok-9f2e"])(text) == scrubbed


# What a config with PG_PASSWORD=postgres, a one-character token and a Redis password `redis`
# makes the redactor know (with the basic auth pair a config derives).
SHORT = ["postgres", "x", "redis", "probe:postgres"]


R = REDACTED


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        # the words, the schemes, the kinds stay
        ('kind=postgres target=db event="probe ok"', 'kind=postgres target=db event="probe ok"'),
        ("postgresql://probe@db:5432/app", "postgresql://probe@db:5432/app"),
        ("redis://cache:6379/0 x=1 y=x", "redis://cache:6379/0 x=1 y=x"),
        # as a credential they go
        ("to postgresql://app:postgres@db:5432/app", f"to postgresql://app:{R}@db:5432/app"),
        ("redis://:redis@cache:6379/0", f"redis://:{R}@cache:6379/0"),
        ("rediss://x@cache:6380/0", f"rediss://{R}@cache:6380/0"),
        ("Authorization: Bearer x, Accept: x", f"Authorization: Bearer {R}, Accept: x"),
        ("{'Authorization': 'x', 'X-Kind': 'x'}", f"{{'Authorization': '{R}', 'X-Kind': 'x'}}"),
        (
            '{"password": "postgres", "kind": "postgres"}',
            f'{{"password": "{R}", "kind": "postgres"}}',
        ),
        ("user=probe password=postgres dbname=app", f"user=probe password={R} dbname=app"),
        ("PGPASSWORD=postgres.", f"PGPASSWORD={R}."),
        ("GET /h?access_token=x&page=x", f"GET /h?access_token={R}&page=x"),
        ("Cookie: sid=x; theme=dark", f"Cookie: sid={R}; theme=dark"),
        ("token=https://probe:x@h/", f"token=https://probe:{R}@h/"),
        # Basic auth's base64 of user:password, whatever the user
        ("Basic " + base64.b64encode(b"someone:postgres").decode(), f"Basic {R}"),
        # the pair basic auth sends is long enough to go as a whole, wherever it stands
        ("postgresql://probe:postgres@db/app", f"postgresql://{R}@db/app"),
        # a key that holds no secret is left alone
        (
            "targets[0].password: variable X is not set",
            "targets[0].password: variable X is not set",
        ),
    ],
)
def test_a_short_or_common_secret_is_scrubbed_only_as_a_credential(
    text: str, scrubbed: str
) -> None:
    assert Redactor(SHORT)(text) == scrubbed


def test_the_client_libraries_texts_stay_readable_and_lose_their_credentials() -> None:
    """What asyncpg, the redis kind's client, httpx and botocore print, with their own
    exception classes: the first two never name the password; the others repeat URLs with
    their userinfo. The redis client's is made from the server's own WRONGPASS reply."""
    redactor = Redactor(SHORT)
    request = httpx.Request("GET", "https://probe:x@api.example.com/health")
    with pytest.raises(httpx.HTTPStatusError) as status:
        httpx.Response(503, request=request).raise_for_status()
    refused = 'password authentication failed for user "postgres"'
    wrong = "invalid username-password pair or user is disabled."
    texts = [
        (asyncpg.exceptions.InvalidPasswordError(refused), refused),
        (error_reply(f"WRONGPASS {wrong}"), wrong),
        (
            status.value,
            f"Server error '503 Service Unavailable' for url 'https://probe:{R}@api.example.com/health'",
        ),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="https://probe:x@sqs.aws/"),
            f'Could not connect to the endpoint URL: "https://probe:{R}@sqs.aws/"',
        ),
    ]

    for exc, expected in texts:
        assert redactor(str(exc)).splitlines()[0] == expected


@pytest.mark.parametrize(
    "secrets",
    [["red"], ["act"], ["d>"], ["<r"], ["redacted"], ["<redacted>"], ["edacte"], ["d><re"],
     ["<redacted>CANARY-x1"], ["red", "act", "<", ">", "redacted", "dac"]],
    ids=str,
)  # fmt: skip
def test_the_marker_is_never_rewritten(secrets: list[str]) -> None:
    """Before, a secret `red` turned the marker into `<<redacted>acted>`, and each pass again."""
    redactor = Redactor(secrets)
    texts = [
        REDACTED,
        f"a {REDACTED} b {REDACTED}{REDACTED}",
        f"postgresql://probe:{REDACTED}@db/app password={REDACTED}",
        f"Authorization: Bearer {REDACTED}",
    ]
    for text in texts:
        assert redactor(text) == text
        assert redactor(redactor(text)) == text


def test_a_secret_holding_the_marker_is_scrubbed_whole() -> None:
    redactor = Redactor(["CANARY-x1<redacted>", "<redacted>CANARY-x2"])

    assert (
        redactor("a CANARY-x1<redacted> b <redacted>CANARY-x2 c") == f"a {REDACTED} b {REDACTED} c"
    )


def test_redacting_twice_changes_nothing_more() -> None:
    """The log pipeline redacts each field, then the rendered line."""
    redactor = Redactor([*SHORT, SECRET, "CANARY-tok-9f2e", "https://u:CANARY-pw2@h/"])
    text = (
        f"kind=postgres url=postgresql://probe:postgres@db/app {SECRET!r} "
        "Authorization: Bearer x; CANARY-tok-9f2e%2FCANARY-tok-9f2e https://u:CANARY-pw2@h/"
    )
    once = redactor(text)

    assert redactor(once) == once
    for value in ("CANARY", "p@ss", ":postgres@", "Bearer x"):
        assert value not in once


def test_is_secret_knows_a_short_secret_given_whole() -> None:
    redactor = Redactor(["x", "CANARY-tok-9f2e"])

    assert redactor.is_secret("x") and redactor.is_secret("CANARY-tok-9f2e")
    assert not redactor.is_secret("xx") and redactor("x") == "x"


@pytest.mark.parametrize(
    ("value", "weak"),
    [
        ("x", True),
        ("1234567", True),
        ("postgres", True),  # a word, however long
        ("Localhost", True),
        ("authentication", True),
        ("password123", True),  # a common password
        ("Bearer x", True),  # the scheme is not the secret
        (":redis", True),  # a user:password pair without a user
        ("CANARY-pw", False),
        ("xKqPzLmWvRtY", False),  # letters, but no word's case
        ("s3cret-value", False),
    ],
)
def test_weakness_judges_the_secret_not_its_wrapping(value: str, weak: bool) -> None:
    assert (weakness(value) is not None) == weak
    assert value not in (weakness(value) or "")


async def test_the_landing_page_stays_readable_with_a_short_secret() -> None:
    """PG_PASSWORD=postgres and a one-character token: what the page shows of the targets
    keeps its words (before: `<redacted> <redacted>ql://...`); a URL's password goes."""
    config = parse_config(
        """
targets:
  - {name: db, kind: postgres, dsn: "postgresql://probe@127.0.0.1:1/app",
     password: {from_env: PG_PASSWORD}, interval: 1m, timeout: 2s}
  - {name: web, kind: http, url: "http://127.0.0.1:1/health",
     headers: {Authorization: {from_env: TOKEN}}, interval: 1m, timeout: 2s}
""",
        "<test>",
        KINDS,
        {"PG_PASSWORD": "postgres", "TOKEN": "x"},
    )
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
    app.start()
    client = WebClient(make_web_app(app))
    await client.start_server()
    try:
        app.last_reload_error = (
            "c.yml:3: targets[0]: could not reach postgresql://probe:postgres@127.0.0.1:1/app "
            "with Authorization: x"
        )
        page = await (await client.get("/")).text()
    finally:
        await client.close()
        await app.stop()

    assert "postgres · postgresql://probe@127.0.0.1:1/app" in page
    assert "http · GET http://127.0.0.1:1/health" in page
    assert (
        "could not reach postgresql://probe:&lt;redacted&gt;@127.0.0.1:1/app "
        "with Authorization: &lt;redacted&gt;" in page
    )
    assert ":postgres@" not in page
