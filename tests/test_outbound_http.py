"""saas_platform.lib.outbound_http: SSRF refusals (literal, resolved, redirected), timeouts, body cap.

Every request goes to servers these tests start on loopback; nothing reaches the internet.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from saas_platform.lib import outbound_http
from saas_platform.lib.outbound_http import (
    BlockedDestination,
    ConnectionFailed,
    InvalidRequest,
    InvalidURL,
    OutboundTimeout,
    TLSError,
    TooManyRedirects,
)

from tests.http_server import LocalServer

LOOPBACK_ONLY = ["127.0.0.1/32"]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as local:
        yield local


@pytest.fixture(autouse=True)
def _strict_policy() -> Iterator[None]:
    # Whatever the environment says, each test starts from the production default.
    with override_settings(OUTBOUND_HTTP_ALLOW_PRIVATE=False, OUTBOUND_HTTP_ALLOWED_NETWORKS=[]):
        yield


@pytest.fixture
def allow_loopback() -> Iterator[None]:
    with override_settings(OUTBOUND_HTTP_ALLOWED_NETWORKS=LOOPBACK_ONLY):
        yield


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> Counter[str]:
    """Make `names` resolve to the given addresses; returns how often each was looked up."""
    real = socket.getaddrinfo
    lookups: Counter[str] = Counter()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            lookups[host] += 1
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (ip, port, 0, 0) if ":" in ip else (ip, port),
                )
                for ip in names[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


# --- Refused destinations ------------------------------------------------------------------------

BLOCKED_LITERALS = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 -- a destination under test, nothing binds
    ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("[::1]", "loopback"),
    ("[::]", "unspecified"),
    ("[fe80::1]", "link-local"),
    ("[fc00::1]", "unique local"),
    ("[fd12:3456::1]", "unique local"),
    ("[fec0::1]", "site-local"),
    ("[ff02::1]", "multicast"),
    ("[100::1]", "discard-only"),
    ("[2001:db8::1]", "documentation"),
    ("[2001::1]", "IETF"),  # Teredo
    ("[::127.0.0.1]", "IPv4-compatible"),
    # IPv6 spellings of blocked IPv4 addresses are judged by the IPv4 address they reach.
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:10.0.0.1]", "private"),
    ("[::ffff:169.254.169.254]", "link-local"),
    ("[::ffff:100.64.0.1]", "carrier-grade NAT"),
    ("[64:ff9b::7f00:1]", "loopback"),  # NAT64
    ("[64:ff9b::a9fe:a9fe]", "link-local"),
    ("[2002:7f00:1::1]", "loopback"),  # 6to4
    ("[2002:c0a8:101::1]", "private"),
    ("[64:ff9b:1::1]", "local-use NAT64"),
]


@pytest.mark.parametrize(("host", "why"), BLOCKED_LITERALS)
def test_it_refuses_every_non_public_address_class(host: str, why: str) -> None:
    with pytest.raises(BlockedDestination, match=why) as caught:
        outbound_http.request("GET", f"http://{host}/")
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    "host",
    # What the system resolver turns into 127.0.0.1 / 10.0.0.1: still judged by the address.
    ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "167772161", "localhost", "LOCALHOST"],
)
def test_it_refuses_numeric_and_named_spellings_after_resolving_them(host: str) -> None:
    with pytest.raises(BlockedDestination, match="resolves to"):
        outbound_http.request("GET", f"http://{host}/")


def test_it_refuses_a_name_that_resolves_to_a_private_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"intranet.test": ["192.168.0.10"]})
    with pytest.raises(BlockedDestination, match=r"intranet\.test resolves to 192\.168\.0\.10"):
        outbound_http.request("GET", "https://intranet.test/admin")


def test_it_refuses_a_name_with_one_private_address_among_public_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"mixed.test": ["8.8.8.8", "10.0.0.7"]})
    with pytest.raises(BlockedDestination, match=r"10\.0\.0\.7"):
        outbound_http.request("GET", "http://mixed.test/")


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ],
)
def test_public_addresses_pass_the_check(address: str) -> None:
    outbound_http.check_address(address)


def test_it_connects_to_the_address_it_checked_and_sends_the_original_host(
    server: LocalServer, allow_loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_dns(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    response = outbound_http.request("GET", server.url("/echo", host="pinned.test"))
    assert response.status == 200
    assert json.loads(response.body)["headers"]["host"] == f"pinned.test:{server.port}"
    # Resolved once: no second lookup that a rebinding DNS server could answer differently.
    assert lookups["pinned.test"] == 1


# --- Redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.2:{port}/echo",  # loopback, outside the allowed 127.0.0.1/32
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/echo",
        "http://[::ffff:10.0.0.1]/",
        "http://evil.test:{port}/echo",  # resolves to a private address
    ],
)
def test_a_redirect_to_a_blocked_address_is_refused(
    server: LocalServer, allow_loopback: None, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    fake_dns(monkeypatch, {"evil.test": ["10.0.0.5"]})
    before = len(server.requests)
    target = location.format(port=server.port)
    with pytest.raises(BlockedDestination):
        outbound_http.request("GET", server.url(f"/redirect?to={target}"))
    assert len(server.requests) == before + 1  # the redirect itself, nothing after it


def test_it_follows_a_redirect_and_reports_the_final_url(
    server: LocalServer, allow_loopback: None
) -> None:
    response = outbound_http.request("GET", server.url("/redirect?to=/echo%3Fafter=1"))
    assert (response.status, response.redirects) == (200, 1)
    assert response.url == server.url("/echo?after=1")
    assert json.loads(response.body)["path"] == "/echo?after=1"


def test_a_303_after_a_post_becomes_a_get_without_body(
    server: LocalServer, allow_loopback: None
) -> None:
    response = outbound_http.request(
        "POST",
        server.url("/redirect?to=/echo&code=303"),
        body="payload",
        headers={"Content-Type": "text/plain"},
    )
    seen = json.loads(response.body)
    assert (seen["method"], seen["body"]) == ("GET", "")
    assert "content-type" not in seen["headers"]


def test_a_307_keeps_the_method_and_body(server: LocalServer, allow_loopback: None) -> None:
    response = outbound_http.request(
        "PUT", server.url("/redirect?to=/echo&code=307"), body="payload"
    )
    seen = json.loads(response.body)
    assert (seen["method"], seen["body"]) == ("PUT", "payload")


def test_credentials_are_dropped_when_a_redirect_leaves_the_origin(
    server: LocalServer, allow_loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"other.test": ["127.0.0.1"]})
    headers = {"Authorization": "Bearer secret", "Cookie": "s=1", "X-Trace": "t"}
    same = outbound_http.request("GET", server.url("/redirect?to=/echo"), headers=headers)
    assert json.loads(same.body)["headers"]["authorization"] == "Bearer secret"
    elsewhere = server.url("/echo", host="other.test")
    other = outbound_http.request("GET", server.url(f"/redirect?to={elsewhere}"), headers=headers)
    seen = json.loads(other.body)["headers"]
    assert "authorization" not in seen
    assert "cookie" not in seen
    assert seen["x-trace"] == "t"


def test_a_redirect_loop_stops_at_the_limit(server: LocalServer, allow_loopback: None) -> None:
    with pytest.raises(TooManyRedirects) as caught:
        outbound_http.request("GET", server.url("/loop"), max_redirects=3)
    assert caught.value.retryable is False


def test_redirects_are_returned_as_they_are_when_not_followed(
    server: LocalServer, allow_loopback: None
) -> None:
    response = outbound_http.request("GET", server.url("/redirect?to=/echo"), max_redirects=0)
    assert (response.status, response.headers["Location"]) == (302, "/echo")


def test_a_redirect_to_another_scheme_is_refused(server: LocalServer, allow_loopback: None) -> None:
    with pytest.raises(InvalidURL, match="only http and https"):
        outbound_http.request("GET", server.url("/redirect?to=file:///etc/passwd"))


# --- The operator's allow-list -------------------------------------------------------------------


def test_allowed_networks_open_exactly_those_addresses(
    server: LocalServer, allow_loopback: None
) -> None:
    assert outbound_http.request("GET", server.url("/echo")).status == 200
    with pytest.raises(BlockedDestination):
        outbound_http.request("GET", f"http://127.0.0.2:{server.port}/echo")


def test_allow_private_opens_private_and_loopback_addresses(server: LocalServer) -> None:
    with override_settings(OUTBOUND_HTTP_ALLOW_PRIVATE=True):
        assert outbound_http.request("GET", server.url("/echo")).status == 200
        outbound_http.check_address("10.0.0.1")
        outbound_http.check_address("::ffff:192.168.0.1")


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"],  # noqa: S104 -- destinations
)
def test_unspecified_and_multicast_stay_refused_even_when_private_is_allowed(address: str) -> None:
    with (
        override_settings(
            OUTBOUND_HTTP_ALLOW_PRIVATE=True, OUTBOUND_HTTP_ALLOWED_NETWORKS=["0.0.0.0/0", "::/0"]
        ),
        pytest.raises(BlockedDestination),
    ):
        outbound_http.check_address(address)


def test_an_allowed_network_also_covers_the_mapped_ipv6_form() -> None:
    with override_settings(OUTBOUND_HTTP_ALLOWED_NETWORKS=["10.0.0.0/8"]):
        outbound_http.check_address("::ffff:10.1.2.3")


def test_an_invalid_allowed_network_is_a_configuration_error() -> None:
    with (
        override_settings(OUTBOUND_HTTP_ALLOWED_NETWORKS=["10.0.0.0/8", "not-a-network"]),
        pytest.raises(ImproperlyConfigured, match="not-a-network"),
    ):
        outbound_http.check_address("10.0.0.1")


# --- URLs and requests refused before any connection ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/file", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com:70/", "only http and https"),
        ("example.com/path", "only http and https"),
        ("http:///no-host", "no host"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com:99999/", "invalid URL"),
        ("http://example.com:0/", "port"),
        ("http://exa mple.com/", "spaces or control"),
        ("http://example.com/\r\nX-Injected: 1", "spaces or control"),
        ("http://example.com/" + "a" * 9000, "longer than"),
    ],
)
def test_it_refuses_invalid_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidURL, match=message) as caught:
        outbound_http.request("GET", url)
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "internal.example"},
        {"content-length": "5"},
        {"Transfer-Encoding": "chunked"},
        {"X-Evil": "a\r\nX-Injected: 1"},
        {"Bad Name": "x"},
    ],
)
def test_it_refuses_headers_it_owns_or_that_could_inject(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        outbound_http.request("GET", "http://8.8.8.8/", headers=headers)


# --- Timeouts, failures, limits ------------------------------------------------------------------


# These bounds detect failures, they do not measure speed: a call must end within a few times its
# timeout (generous, since these shared 2-core machines vary 2-3x from day to day) and before the
# slow server would have answered or finished, so an ignored or mis-scaled timeout fails.
TIMEOUT_SLACK = 5


def _assert_cut_off(started: float, timeout: float, *, server_seconds: float | None) -> None:
    """`server_seconds`: when the server would have answered or finished (None: never)."""
    bound = timeout * TIMEOUT_SLACK
    # Otherwise a call that waited for the server would pass too.
    assert server_seconds is None or bound < server_seconds
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"ended after {elapsed:.2f}s with a {timeout}s timeout"


def test_a_slow_answer_is_cut_off_by_the_total_timeout(
    server: LocalServer, allow_loopback: None
) -> None:
    started = time.monotonic()
    with pytest.raises(OutboundTimeout) as caught:
        outbound_http.request("GET", server.url("/slow?seconds=10"), timeout=0.5)
    _assert_cut_off(started, 0.5, server_seconds=10)
    assert caught.value.retryable is True


def test_a_server_dripping_bytes_cannot_outlast_the_total_timeout(
    server: LocalServer, allow_loopback: None
) -> None:
    # Each byte arrives well within any per-read timeout; only a total deadline stops this.
    started = time.monotonic()
    with pytest.raises(OutboundTimeout):
        outbound_http.request("GET", server.url("/drip?bytes=100&interval=0.1"), timeout=1)
    _assert_cut_off(started, 1, server_seconds=100 * 0.1)


def test_connecting_is_cut_off_by_the_connect_timeout(allow_loopback: None) -> None:
    # A listener whose accept queue is full: Linux drops further SYNs, so connect() hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(OutboundTimeout, match="connecting"):
            outbound_http.request(
                "GET", f"http://127.0.0.1:{port}/", timeout=10, connect_timeout=0.5
            )
        # Without the connect timeout, the total one (10 s) would end it.
        _assert_cut_off(started, 0.5, server_seconds=10)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_refused_connection_is_retryable(allow_loopback: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionFailed) as caught:
        outbound_http.request("GET", f"http://127.0.0.1:{port}/")
    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("size", "limit", "truncated"),
    [(100, 100, False), (101, 100, True), (2_000_000, outbound_http.DEFAULT_MAX_BODY_BYTES, True)],
)
def test_the_body_is_capped_and_flagged(
    server: LocalServer, allow_loopback: None, size: int, limit: int, truncated: bool
) -> None:
    response = outbound_http.request("GET", server.url(f"/big?bytes={size}"), max_body_bytes=limit)
    assert len(response.body) == min(size, limit)
    assert response.truncated is truncated


def test_a_head_request_has_no_body(server: LocalServer, allow_loopback: None) -> None:
    response = outbound_http.request("HEAD", server.url("/big?bytes=50"))
    assert (response.status, response.body, response.headers["Content-Length"]) == (200, b"", "50")


def test_text_uses_the_declared_charset(server: LocalServer, allow_loopback: None) -> None:
    assert outbound_http.request("GET", server.url("/latin1")).text() == "café"


def test_error_statuses_are_responses_not_exceptions(
    server: LocalServer, allow_loopback: None
) -> None:
    response = outbound_http.request("GET", server.url("/status/503"))
    assert (response.status, response.body) == (503, b"status 503")


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=service.test",
         "-addext", "subjectAltName=DNS:service.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[LocalServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    with LocalServer(context) as local:
        yield local


def _client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_https_verifies_the_original_name_while_connecting_to_the_checked_address(
    tls_server: LocalServer,
    tls_files: tuple[Path, Path],
    allow_loopback: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"service.test": ["127.0.0.1"]})
    response = outbound_http.request(
        "GET",
        tls_server.url("/echo", host="service.test"),
        ssl_context=_client_context(tls_files[0]),
    )
    assert response.status == 200
    assert json.loads(response.body)["headers"]["host"] == f"service.test:{tls_server.port}"


def test_a_certificate_for_another_name_is_refused_for_good(
    tls_server: LocalServer, tls_files: tuple[Path, Path], allow_loopback: None
) -> None:
    with pytest.raises(TLSError) as caught:
        outbound_http.request(
            "GET", tls_server.url("/echo"), ssl_context=_client_context(tls_files[0])
        )
    assert caught.value.retryable is False


def test_an_untrusted_certificate_is_refused(
    tls_server: LocalServer, allow_loopback: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"service.test": ["127.0.0.1"]})
    with pytest.raises(TLSError, match="certificate"):
        outbound_http.request("GET", tls_server.url("/echo", host="service.test"))


def test_a_tls_server_that_never_answers_is_cut_off_by_the_timeout(allow_loopback: None) -> None:
    # Accepts TCP but never speaks TLS: the handshake is bounded too.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted: list[socket.socket] = []
    accept: Callable[[], None] = lambda: accepted.append(listener.accept()[0])  # noqa: E731
    threading.Thread(target=accept, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(OutboundTimeout):
            outbound_http.request(
                "GET", f"https://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.7
            )
        _assert_cut_off(started, 0.7, server_seconds=None)
    finally:
        for sock in accepted:
            sock.close()
        listener.close()
