"""The web surface against real clients: TLS and basic auth from the web config file, scraped
by a real Prometheus and refused to curl without credentials; a reload that swaps passwords
and certificates; /-/reload only when enabled and never from another site; connections that
never finish a request are closed; the landing page shows only what it is told to."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme
import yaml

from stackprobe.app import App
from stackprobe.config import parse_config
from stackprobe.probes import KINDS
from stackprobe.secrets import Redactor
from stackprobe.server import KEEPALIVE_SECONDS, Surface, WebOptions, make_web_app
from stackprobe.webconfig import Gate, WebConfigError, load_web_config
from tests.support.exporter import Exporter, start_exporter, stop_exporter
from tests.support.polling import wait_http, wait_until, wait_until_async
from tests.support.processes import free_port, require_binary, run, stop
from tests.support.slowloris import Slowloris
from tests.support.web_client import WebClient

TARGETS = {"targets": [{"name": "closed-port", "kind": "http", "url": "http://127.0.0.1:1/"}]}
PASSWORD = "CANARY-web-password-7d41"
RUN = [sys.executable, "-m", "stackprobe", "run", "--config"]


def bcrypt_hash(password: str) -> str:
    """As `htpasswd -nBC 10` writes it: the $2y$ prefix Apache uses, which Go reads too."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    return "$2y$" + hashed[4:]


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path
    server_cert: Path
    server_key: Path

    def issue(self, directory: Path, name: str, *sans: str) -> tuple[Path, Path]:
        leaf = self.ca.issue_cert(*sans)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pki = Pki(ca, ca_file, tmp_path / "unused", tmp_path / "unused")
    pki.server_cert, pki.server_key = pki.issue(tmp_path, "server", "127.0.0.1", "localhost")
    return pki


def write_web_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def https_client(pki: Pki, **kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=pki.ca_file), timeout=10, **kwargs)


def wait_serving(exporter: Exporter, client: httpx.Client) -> None:
    wait_until(
        lambda: client.get(exporter.url + "/-/healthy").status_code == 200,
        20,
        what="the exporter to answer over TLS",
        logs=[exporter.log_path],
        ignore=(httpx.TransportError,),
    )


def served_certificate(url: str, pki: Pki) -> bytes:
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=pki.ca_file)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def curl(*argv: str) -> subprocess.CompletedProcess[str]:
    return run(require_binary("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code}", *argv)


@pytest.fixture
def tls_exporter(tmp_path: Path, pki: Pki) -> Iterator[tuple[Exporter, Path]]:
    # Relative paths, as the toolkit resolves them: next to the web config file.
    web = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {"cert_file": "server.pem", "key_file": "server.key"},
            "basic_auth_users": {"prometheus": bcrypt_hash(PASSWORD)},
            "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
        },
    )
    exporter = start_exporter(
        tmp_path, TARGETS, {}, "--web.config.file", str(web), scheme="https", wait=False
    )
    try:
        with https_client(pki, auth=("prometheus", PASSWORD)) as client:
            wait_serving(exporter, client)
        yield exporter, web
    finally:
        stop_exporter(exporter)


def test_prometheus_scrapes_over_tls_with_basic_auth_and_curl_without_is_refused(
    tmp_path: Path, pki: Pki, tls_exporter: tuple[Exporter, Path]
) -> None:
    exporter, _ = tls_exporter
    url = exporter.url + "/metrics"

    assert curl("--cacert", str(pki.ca_file), url).stdout == "401"
    assert curl("--cacert", str(pki.ca_file), "-u", "prometheus:wrong", url).stdout == "401"
    assert curl("--cacert", str(pki.ca_file), "-u", f"prometheus:{PASSWORD}", url).stdout == "200"
    plain = curl(url.replace("https://", "http://"))
    assert plain.stdout in ("000", "400"), plain  # plain HTTP gets no metrics from a TLS port
    with https_client(pki) as anonymous:
        refused = anonymous.get(url)
    assert refused.headers["WWW-Authenticate"] == "Basic"
    assert refused.headers["X-Frame-Options"] == "deny"  # the config's headers on every answer
    assert "probe_success" not in refused.text

    port = free_port()
    scrape = {"scheme": "https", "tls_config": {"ca_file": str(pki.ca_file)}}
    target = {"static_configs": [{"targets": [exporter.url.removeprefix("https://")]}]}
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "stackprobe",
                        **scrape,
                        **target,
                        "basic_auth": {"username": "prometheus", "password": PASSWORD},
                    },
                    {
                        "job_name": "wrong-password",
                        **scrape,
                        **target,
                        "basic_auth": {"username": "prometheus", "password": "nope"},
                    },
                ],
            }
        )
    )
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("w")
    prometheus = subprocess.Popen(
        [
            require_binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 60, process=prometheus, logs=[log_path])

        def scraped() -> dict[str, dict[str, Any]]:
            targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            return {t["labels"]["job"]: t for t in targets if t["health"] != "unknown"}

        wait_until(
            lambda: len(scraped()) == 2,
            30,
            what="Prometheus to scrape both jobs",
            logs=[log_path, exporter.log_path],
            ignore=(httpx.TransportError,),
        )
        jobs = scraped()
        assert jobs["stackprobe"]["health"] == "up", jobs["stackprobe"]
        assert jobs["wrong-password"]["health"] == "down"
        assert "401" in jobs["wrong-password"]["lastError"]
        series = httpx.get(
            f"{api}/query", params={"query": 'probe_success{job="stackprobe"}'}, timeout=5
        ).json()["data"]["result"]
        assert [s["metric"]["target"] for s in series] == ["closed-port"]
    finally:
        stop(prometheus)
        log.close()
    assert PASSWORD not in exporter.logs()


def test_a_reload_swaps_passwords_and_certificates_and_a_bad_file_keeps_the_old(
    tmp_path: Path, pki: Pki, tls_exporter: tuple[Exporter, Path]
) -> None:
    exporter, web = tls_exporter
    before = served_certificate(exporter.url, pki)
    new_password = PASSWORD + "-rotated"
    cert, key = pki.issue(tmp_path, "rotated", "127.0.0.1")
    write_web_config(
        web,
        {
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {"prometheus": bcrypt_hash(new_password)},
        },
    )

    with https_client(pki, auth=("prometheus", PASSWORD)) as old:
        reloaded = old.post(exporter.url + "/-/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert old.get(exporter.url + "/metrics").status_code == 401
    new = https_client(pki, auth=("prometheus", new_password), headers={"Connection": "close"})
    assert new.get(exporter.url + "/metrics").status_code == 200
    after = served_certificate(exporter.url, pki)
    assert after != before and after == cert_der(cert)

    web.write_text(f"basic_auth_users:\n  prometheus: plain-{PASSWORD}\n")
    refused = new.post(exporter.url + "/-/reload")

    assert refused.status_code == 500
    assert f"web config {web}: basic_auth_users: " in refused.text
    assert "is not a bcrypt hash" in refused.text
    assert new.get(exporter.url + "/metrics").status_code == 200  # the old file still holds
    assert served_certificate(exporter.url, pki) == after
    metrics = new.get(exporter.url + "/metrics").text
    assert "stackprobe_config_last_reload_successful 0.0" in metrics
    # Two reloads, one good and one whose web config was bad: each counted once.
    assert 'stackprobe_config_reloads_total{result="success"} 1.0' in metrics
    assert 'stackprobe_config_reloads_total{result="failure"} 1.0' in metrics
    new.close()
    assert PASSWORD not in exporter.logs() + refused.text


def cert_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_client_certificates_are_required_and_their_names_checked(tmp_path: Path, pki: Pki) -> None:
    clients = trustme.CA()
    clients_file = tmp_path / "clients.pem"
    clients.cert_pem.write_to_path(str(clients_file))
    allowed, other = (clients.issue_cert(name) for name in ("prom.example", "other.example"))
    for name, leaf in (("allowed", allowed), ("other", other)):
        leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{name}.pem"))
    web = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": str(clients_file),
                "client_allowed_sans": ["prom.example"],
            }
        },
    )
    exporter = start_exporter(
        tmp_path, TARGETS, {}, "--web.config.file", str(web), scheme="https", wait=False
    )
    try:
        url = exporter.url + "/metrics"
        ca = ("--cacert", str(pki.ca_file))
        wait_until(
            lambda: curl(*ca, "--cert", str(tmp_path / "allowed.pem"), url).stdout == "200",
            20,
            what="the exporter to answer a client with a certificate",
            logs=[exporter.log_path],
        )
        without = curl(*ca, url)
        assert without.stdout == "000" and without.returncode != 0  # no handshake
        assert curl(*ca, "--cert", str(tmp_path / "other.pem"), url).stdout == "403"
    finally:
        stop_exporter(exporter)


def test_a_bad_web_config_at_start_exits_2_saying_what_is_wrong(tmp_path: Path) -> None:
    web = write_web_config(
        tmp_path / "web.yml",
        {"tls_server_config": {"cert_file": "missing.pem", "key_file": "missing.key"}},
    )
    config = tmp_path / "stackprobe.yml"
    config.write_text(yaml.safe_dump(TARGETS))

    done = subprocess.run(
        [*RUN, str(config), "--listen", f"127.0.0.1:{free_port()}", "--web.config.file", str(web)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "web config: tls_server_config:" in done.stderr
    assert "No such file or directory" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"basic_auth_users: {{alice: {PASSWORD}}}", "the password of 'alice' is not a bcrypt"),
        ("basic_auth_user: {}", "basic_auth_user: Extra inputs are not permitted"),
        (
            "tls_server_config: {cert_file: a, key_file: b, curve_preferences: [X25519]}",
            "cannot set a list of curves",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequestClientCert}",
            "without verifying them",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_FAST]}",
            "unknown cipher suite TLS_FAST",
        ),
        ("http_server_config: {headers: {X-Frame-Options: allow}}", "deny, sameorigin"),
        ("tls_server_config: {cert_file: a}", "give key_file (or key inline)"),
        ("http_server_config: {headers: {X-Powered-By: me}}", "unknown header X-Powered-By"),
        ("a: &x [1]\nb: *x\n", "YAML aliases (*name) are not allowed"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("rate_limit: {interval: often, burst: 1}", "rate_limit.interval"),
    ],
)
def test_each_bad_web_config_names_the_file_and_the_problem(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)

    with pytest.raises(WebConfigError) as raised:
        load_web_config(path)

    assert str(raised.value).startswith(f"web config {path}: ")
    assert says in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_what_toolkit_files_hold_loads_as_the_toolkit_reads_it(tmp_path: Path) -> None:
    """Values YAML would read as numbers or booleans stay strings, empty keys mean their
    default, a TLS block with no certificate serves plain HTTP, TLS 1.3 suite names are
    accepted and ignored, and an interval of 0 turns the rate limit off (as Go does)."""
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        "  client_auth_type:\n"
        "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"
        "http_server_config:\n"
        "  http2: false\n"
        "  headers: {X-XSS-Protection: 1, X-Frame-Options: DENY}\n"
        f"basic_auth_users: {{1234: '{bcrypt_hash('x')}', no: '{bcrypt_hash('y')}'}}\n"
        "rate_limit: {interval: 0, burst: 0}\n"
    )

    config = load_web_config(path)

    assert config.tls_server_config is not None and not config.tls_server_config.enabled
    assert config.http_server_config.headers == {"X-XSS-Protection": "1", "X-Frame-Options": "DENY"}
    assert sorted(config.basic_auth_users) == ["1234", "no"]
    assert Surface(WebOptions(path)).tls is None
    assert Gate(config).admit()


async def test_credentials_are_checked_as_bytes_whatever_their_script_or_length(
    tmp_path: Path,
) -> None:
    """UTF-8 names and passwords (which aiohttp decodes as latin-1) and passwords past
    bcrypt's 72 bytes, which htpasswd and Go cut there; a client without credentials never
    spends the rate limit of one with them."""
    long = "p" * 72
    web = write_web_config(
        tmp_path / "web.yml",
        {
            "basic_auth_users": {"jörg": bcrypt_hash("pässwörd€"), "long": bcrypt_hash(long)},
            "rate_limit": {"interval": "1m", "burst": 2},
        },
    )
    config = parse_config(yaml.safe_dump(TARGETS), "<test>", KINDS)
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
    client = WebClient(make_web_app(app, Surface(WebOptions(web))))
    await client.start_server()

    def basic(user: str, password: str) -> dict[str, str]:
        raw = f"{user}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    try:
        strangers = [
            (await client.get("/-/healthy", headers=basic("jörg", "wrong"))).status
            for _ in range(4)
        ]
        utf8 = await client.get("/-/healthy", headers=basic("jörg", "pässwörd€"))
        longer = await client.get("/-/healthy", headers=basic("long", long + "ignored"))
        limited = await client.get("/-/healthy", headers=basic("jörg", "pässwörd€"))
        # not base64 at all, and not even ASCII: refused as no credentials, not a 500
        reader, writer = await asyncio.open_connection("127.0.0.1", int(client.url.rsplit(":")[-1]))
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: h\r\nAuthorization: Basic \xe9\r\n\r\n")
        garbled = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
    finally:
        await client.close()
        await app.stop()

    assert garbled.startswith(b"HTTP/1.1 401 ") and b"WWW-Authenticate: Basic" in garbled
    assert strangers == [401] * 4
    assert (utf8.status, longer.status, limited.status) == (200, 200, 429)


def test_reloading_over_http_needs_the_flag_and_a_request_no_other_site_can_send(
    tmp_path: Path,
) -> None:
    config = tmp_path / "stackprobe.yml"
    config.write_text(yaml.safe_dump(TARGETS))
    port = free_port()
    closed = subprocess.Popen(
        [*RUN, str(config), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200,
            20,
            what="the exporter to start",
            ignore=(httpx.TransportError,),
        )
        disabled = httpx.post(f"http://127.0.0.1:{port}/-/reload")
        assert disabled.status_code == 403 and "--web.enable-lifecycle" in disabled.text
    finally:
        stop(closed)

    exporter = start_exporter(tmp_path, TARGETS, {})
    try:
        reload = exporter.url + "/-/reload"
        what_browsers_send: list[dict[str, Any]] = [
            {"headers": {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
            {"headers": {"Sec-Fetch-Site": "same-site"}},
            {"headers": {"Origin": "null"}},
            {"content": b"x=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            {"content": b"x", "headers": {"Content-Type": "text/plain;charset=UTF-8"}},
            {"content": b"--b--", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
        ]
        for request in what_browsers_send:
            refused = httpx.post(reload, timeout=10, **request)
            assert refused.status_code == 403, (request, refused.text)
        same_origin = {"Origin": exporter.url, "Sec-Fetch-Site": "same-origin"}
        assert httpx.post(reload, headers=same_origin, timeout=10).status_code == 200
        assert httpx.post(reload, timeout=10).status_code == 200  # curl -X POST
        reloads = exporter.metrics()["stackprobe_config_reloads"]
        assert {s.labels["result"]: s.value for s in reloads if s.name.endswith("_total")} == {
            "success": 2,
            "failure": 0,
        }
    finally:
        stop_exporter(exporter)


def test_connections_that_never_finish_a_request_are_closed_and_metrics_keep_answering(
    tmp_path: Path,
) -> None:
    """Slowloris: half-sent headers trickling forever, and sockets that send nothing."""
    exporter = start_exporter(tmp_path, TARGETS, {})
    try:
        pid = exporter.process.pid
        fds_before = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        attack = Slowloris(int(exporter.url.rsplit(":", 1)[1]), 150, 150)
        started = time.monotonic()
        slowest = 0.0
        while attack.open and time.monotonic() - started < KEEPALIVE_SECONDS + 10:
            attack.tick(wait=1.0)
            began = time.monotonic()
            assert exporter.get("/metrics").status_code == 200
            slowest = max(slowest, time.monotonic() - began)
        took = time.monotonic() - started
        still_open = attack.open
        attack.close()

        assert not still_open, f"{still_open} of 300 still open after {took:.0f} s"
        assert took < KEEPALIVE_SECONDS + 5
        assert slowest < 1.0
        wait_until(
            lambda: len(list(Path(f"/proc/{pid}/fd").iterdir())) <= fds_before + 5,
            10,
            what="the exporter's file descriptors back to where they were",
        )
    finally:
        stop_exporter(exporter)


async def test_the_landing_page_shows_names_only_or_nothing_when_told() -> None:
    config = parse_config(yaml.safe_dump(TARGETS), "<test>", KINDS)
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=Path("/etc/sp/secret.yml"))
    app.start()
    try:
        for mode, status, shown, hidden in (
            ("full", 200, ["closed-port", "127.0.0.1:1", "/etc/sp/secret.yml"], []),
            ("names", 200, ["closed-port"], ["127.0.0.1:1", "/etc/sp/secret.yml"]),
            ("off", 404, ["--web.landing-page=off"], ["closed-port"]),
        ):
            surface = Surface(WebOptions(landing=mode))  # type: ignore[arg-type]
            client = WebClient(make_web_app(app, surface))
            await client.start_server()
            try:

                async def answered(client: WebClient = client) -> bool:
                    page = await client.get("/")
                    return "1 failing" in await page.text() or page.status == 404

                # the closed port's first result, so there is a detail to hide
                await wait_until_async(answered, 10, what=f"a first result ({mode})")
                page = await client.get("/")
                text = await page.text()
                assert page.status == status, mode
                assert all(s in text for s in shown), (mode, text)
                assert not any(h in text for h in hidden), (mode, text)
            finally:
                await client.close()
    finally:
        await app.stop()


async def test_the_rate_limit_answers_429_past_its_burst(tmp_path: Path) -> None:
    web = write_web_config(tmp_path / "web.yml", {"rate_limit": {"interval": "1m", "burst": 3}})
    config = parse_config(yaml.safe_dump(TARGETS), "<test>", KINDS)
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
    client = WebClient(make_web_app(app, Surface(WebOptions(web))))
    await client.start_server()
    try:
        statuses = [(await client.get("/-/healthy")).status for _ in range(5)]
    finally:
        await client.close()
        await app.stop()

    assert statuses == [200, 200, 200, 429, 429]


def test_a_sighup_while_the_config_loads_is_a_reload_once_running(tmp_path: Path) -> None:
    """The config is a FIFO, so the test knows when stackprobe is inside the load: it has
    opened the pipe. SIGHUP's default action would end the process there, without a word."""
    fifo = tmp_path / "stackprobe.yml"
    os.mkfifo(fifo)
    port = free_port()
    log_path = tmp_path / "stackprobe.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*RUN, str(fifo), "--listen", f"127.0.0.1:{port}", "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        with fifo.open("w") as pipe:  # returns once stackprobe has opened it to read
            process.send_signal(signal.SIGHUP)
            time.sleep(0.2)
            assert process.poll() is None, "a SIGHUP during start-up ended the process"
            pipe.write(yaml.safe_dump(TARGETS))
        wait_http(f"http://127.0.0.1:{port}/-/healthy", 20, process=process, logs=[log_path])
        reloaded = {"targets": [*TARGETS["targets"], {**TARGETS["targets"][0], "name": "added"}]}
        with fifo.open("w") as pipe:  # the reload the SIGHUP asked for reads it again
            pipe.write(yaml.safe_dump(reloaded))
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_until(
            lambda: 'target="added"' in httpx.get(metrics, timeout=5).text,
            20,
            what="the reload asked for during start-up",
            logs=[log_path],
            ignore=(httpx.TransportError,),
        )
        assert "a SIGHUP arrived during start-up; reloading the config now" in log_path.read_text()
    finally:
        stop(process)
    assert process.returncode == 0


def test_a_web_config_that_never_loads_holds_up_neither_scrapes_nor_shutdown(
    tmp_path: Path,
) -> None:
    """A web config swapped for a FIFO nobody writes: while the reload that reads it waits,
    /metrics answers, and SIGTERM still ends the process (a thread of the loop's executor
    would keep it alive: asyncio joins those at exit)."""
    web = tmp_path / "web.yml"
    web.write_text("")
    exporter = start_exporter(tmp_path, TARGETS, {}, "--web.config.file", str(web))
    try:
        web.unlink()
        os.mkfifo(web)
        exporter.process.send_signal(signal.SIGHUP)
        # Once stackprobe has opened the FIFO to read, a writer can open it too: the test then
        # holds it open and writes nothing, so the load waits in its read for good.
        writer = wait_until(lambda: _open_writer(web), 10, what="the reload to open the web config")
        try:
            assert httpx.get(exporter.url + "/metrics", timeout=5).status_code == 200
            exporter.process.send_signal(signal.SIGTERM)
            assert exporter.process.wait(timeout=20) == 0
        finally:
            os.close(writer)
    finally:
        stop_exporter(exporter)
    assert "stackprobe stopping" in exporter.logs()


def _open_writer(fifo: Path) -> int | None:
    """A write end of the FIFO, or None while nobody has it open to read."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


async def test_unknown_paths_and_methods_say_what_exists_with_the_configs_headers(
    tmp_path: Path,
) -> None:
    web = write_web_config(
        tmp_path / "web.yml", {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}
    )
    config = parse_config(yaml.safe_dump(TARGETS), "<test>", KINDS)
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
    client = WebClient(make_web_app(app, Surface(WebOptions(web))))
    await client.start_server()
    try:
        missing = await client.get("/nothing-here")
        put = await client.request("PUT", "/metrics")
        get_reload = await client.get("/-/reload")
        head = await client.request("HEAD", "/-/healthy")
    finally:
        await client.close()
        await app.stop()

    assert (missing.status, "/metrics" in await missing.text()) == (404, True)
    assert (put.status, put.headers["Allow"]) == (405, "GET, HEAD")
    assert (get_reload.status, get_reload.headers["Allow"]) == (405, "POST")
    assert (head.status, head.headers["Content-Length"], await head.read()) == (200, "8", b"")
    for answer in (missing, put, get_reload, head):
        assert answer.headers["X-Frame-Options"] == "deny"
