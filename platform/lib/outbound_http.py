"""Every outbound HTTP request the platform makes goes through this module.

Tenants choose the URLs, so this is where server-side request forgery is stopped. A destination is
judged by the addresses its host name *resolves to*, and the connection goes to exactly the address
that was judged: the name is resolved once, the socket connects to that IP, and the original name
is sent as the Host header and as the TLS server name. A second lookup (DNS rebinding) never
happens. No proxy from the environment is used.

One request:

1. Parse the URL: http or https, a host, a port, no credentials.
2. Resolve the host once; refuse if any of its addresses is private, loopback, link-local,
   multicast, reserved, ... unless the operator allowed it (`OUTBOUND_HTTP_ALLOW_PRIVATE`,
   `OUTBOUND_HTTP_ALLOWED_NETWORKS`).
3. Connect to a checked address (connect timeout), then TLS for https, verified for the host name.
4. Send the request; read the status, the headers and at most `max_body_bytes` of the body. Every
   socket operation is bounded by one deadline for the whole request, so a server that drips a
   byte at a time cannot hold a worker beyond `timeout`.
5. A redirect goes back to step 1 for its Location (up to `max_redirects`), so every hop is checked.

Errors are `OutboundHTTPError` subclasses whose `retryable` says whether trying again could help.
Host name resolution itself is bounded by the system resolver's own timeouts, not by `timeout`.
"""

from __future__ import annotations

import codecs
import functools
import http.client
import ipaddress
import math
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import quote, urljoin, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_MAX_REDIRECTS: Final = 5
MAX_URL_LENGTH: Final = 8192
USER_AGENT: Final = "saas-jobs-platform/0.1"

# Framing and routing headers belong to this module: they must match the checked destination and
# the body actually sent, or a caller could smuggle a second request or address another host.
RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
# Sent only to the origin they were given for; dropped when a redirect leaves it.
CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})


class OutboundHTTPError(Exception):
    """The request did not produce a response. `retryable`: could trying again help?"""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class InvalidURL(OutboundHTTPError):
    retryable = False


class InvalidRequest(OutboundHTTPError):
    retryable = False


class BlockedDestination(OutboundHTTPError):
    retryable = False


class ResolutionFailed(OutboundHTTPError):
    pass


class ConnectionFailed(OutboundHTTPError):
    pass


class OutboundTimeout(OutboundHTTPError):
    pass


class TLSError(OutboundHTTPError):
    pass


class ProtocolError(OutboundHTTPError):
    pass


class TooManyRedirects(OutboundHTTPError):
    retryable = False


# --- Which addresses are refused -----------------------------------------------------------------

_BLOCKED_NETWORKS: Final[tuple[tuple[IPNetwork, str], ...]] = tuple(
    (ipaddress.ip_network(network), why)
    for network, why in (
        # 0.0.0.0 connects to the local host on Linux.
        ("0.0.0.0/8", "an unspecified"),
        ("10.0.0.0/8", "a private"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "a loopback"),
        # Cloud metadata services (169.254.169.254) live here.
        ("169.254.0.0/16", "a link-local"),
        ("172.16.0.0/12", "a private"),
        ("192.0.0.0/24", "a reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "a reserved (documentation)"),
        ("192.88.99.0/24", "a reserved (6to4 relay)"),
        ("192.168.0.0/16", "a private"),
        ("198.18.0.0/15", "a reserved (benchmarking)"),
        ("198.51.100.0/24", "a reserved (documentation)"),
        ("203.0.113.0/24", "a reserved (documentation)"),
        ("224.0.0.0/4", "a multicast"),
        ("240.0.0.0/4", "a reserved"),
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("::/96", "a reserved (IPv4-compatible)"),
        ("::ffff:0:0:0/96", "a reserved (IPv4-translated)"),
        ("64:ff9b:1::/48", "a private (local-use NAT64)"),
        ("100::/64", "a reserved (discard-only)"),
        # Teredo (2001::/32) tunnels to an address hidden in the one given.
        ("2001::/23", "a reserved (IETF protocol assignments)"),
        ("2001:db8::/32", "a reserved (documentation)"),
        ("fc00::/7", "a private (unique local)"),
        ("fe80::/10", "a link-local"),
        ("fec0::/10", "a private (site-local)"),
        ("ff00::/8", "a multicast"),
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
# Never a unicast destination, whatever the operator allows.
_NEVER: Final = ("0.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32", "::/128", "ff00::/8")
_NEVER_NETWORKS: Final = tuple(ipaddress.ip_network(n) for n in _NEVER)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form reaches (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public destination ("a loopback"), or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return blocked_reason(embedded)
    for network, why in _BLOCKED_NETWORKS:
        if address in network:
            return why
    # The standard library's registry as a backstop for anything the table above misses.
    if not address.is_global or address.is_multicast or address.is_reserved:
        return "a non-public"
    return None


def _allowed_networks() -> tuple[IPNetwork, ...]:
    raw: Any = getattr(settings, "OUTBOUND_HTTP_ALLOWED_NETWORKS", ())
    items: Iterable[Any] = raw.split(",") if isinstance(raw, str) else raw
    networks: list[IPNetwork] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"OUTBOUND_HTTP_ALLOWED_NETWORKS: {text!r} is not a network such as 10.0.0.0/8"
            ) from None
    return tuple(networks)


def check_address(address: IPAddress | str, *, host: str | None = None) -> None:
    """Raise BlockedDestination unless a request may go to `address` (a resolved address)."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    reason = blocked_reason(address)
    if reason is None:
        return
    forms: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(address)):
        forms.append(embedded)
    never = any(form in network for form in forms for network in _NEVER_NETWORKS)
    if not never:
        if getattr(settings, "OUTBOUND_HTTP_ALLOW_PRIVATE", False):
            return
        if any(form in network for form in forms for network in _allowed_networks()):
            return
    named = f"{host} resolves to {address}" if host and host != str(address) else str(address)
    raise BlockedDestination(
        f"refused: {named}, {reason} address; only public addresses may be called"
    )


# --- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII (IDNA), without IPv6 brackets
    port: int
    path: str  # the request target: path and query

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def display(self) -> str:
        # Paths and queries often carry secrets (webhook tokens): messages show the origin only.
        return f"{self.scheme}://{self.host_header}"


def _ascii_path(text: str) -> str:
    return "".join(char if ord(char) < 128 else quote(char) for char in text)


def _parse(url: str) -> _Target:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise InvalidURL("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL(f"only http and https URLs can be called, not {scheme or 'this'!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("credentials in the URL are not supported; send an Authorization header")
    hostname = parts.hostname
    if not hostname:
        raise InvalidURL("the URL has no host")
    if port == 0:
        raise InvalidURL("the URL's port must be between 1 and 65535")
    try:
        ipaddress.ip_address(hostname)
        host = hostname
    except ValueError:
        try:
            host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURL(f"invalid host name {hostname!r}") from None
    path = _ascii_path(parts.path or "/")
    if parts.query:
        path += "?" + _ascii_path(parts.query)
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of `url`, for messages that must not show paths or queries."""
    try:
        return _parse(url).display
    except InvalidURL:
        return "(invalid URL)"


# --- Sockets bounded by one deadline -------------------------------------------------------------


def _arm(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the request's time limit was reached")
    sock.settimeout(remaining)


class _DeadlineSocket(socket.socket):
    # Each operation gets the time left until the deadline, not a fresh timeout of its own.
    deadline: float = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        _arm(self, self.deadline)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        # sendall's timeout bounds the whole call (Python 3.5+), so one arming suffices.
        _arm(self, self.deadline)
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    deadline: float = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        _arm(self, self.deadline)
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        # SSLSocket.sendall loops over send, so each chunk is bounded here.
        _arm(self, self.deadline)
        return super().send(data, flags)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTPConnection over a socket connected to a checked address; it never dials itself."""

    def connect(self) -> None:
        raise http.client.NotConnected("outbound_http connects to checked addresses only")


# --- One hop -------------------------------------------------------------------------------------

_Address = tuple[socket.AddressFamily, tuple[Any, ...]]


def _resolve(target: _Target) -> list[_Address]:
    """Every address of the host, each checked; refused as a whole if any one is blocked."""
    try:
        infos = socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        missing = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        raise ResolutionFailed(
            f"could not resolve {target.host}: {exc.strerror}", retryable=exc.errno not in missing
        ) from None
    except UnicodeError:
        raise InvalidURL(f"invalid host name {target.host!r}") from None
    addresses: list[_Address] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # A name with one private address among public ones is refused: the client cannot
        # know which one a later connection or a redirect would use.
        check_address(ipaddress.ip_address(sockaddr[0]), host=target.host)
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise ResolutionFailed(f"{target.host} has no IP address")
    return addresses


def _connect(
    target: _Target,
    addresses: list[_Address],
    *,
    deadline: float,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> socket.socket:
    last_error: OSError | None = None
    for family, sockaddr in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = _DeadlineSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(min(connect_timeout, remaining))
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        if target.scheme == "http":
            sock.deadline = deadline
            return sock
        context = ssl_context or _default_ssl_context()
        context.sslsocket_class = _DeadlineSSLSocket
        try:
            # The handshake counts as connecting.
            sock.settimeout(max(min(connect_timeout, deadline - time.monotonic()), 0.001))
            tls = cast(
                _DeadlineSSLSocket,
                context.wrap_socket(
                    sock, server_hostname=target.host, do_handshake_on_connect=False
                ),
            )
        except BaseException:
            sock.close()
            raise
        try:
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
        tls.deadline = deadline
        return tls
    if last_error is None or isinstance(last_error, TimeoutError):
        raise OutboundTimeout(f"timed out connecting to {target.display}")
    raise ConnectionFailed(f"could not connect to {target.display}: {last_error}")


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    truncated: bool  # the body was longer than max_body_bytes and was cut there
    url: str  # after redirects
    redirects: int
    elapsed: float  # seconds, all hops

    @property
    def origin(self) -> str:
        return url_origin(self.url)

    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        return self.body.decode(charset, errors="replace")


@dataclass(frozen=True)
class _Hop:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    truncated: bool


def _send(
    target: _Target,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    deadline: float,
    connect_timeout: float,
    max_body_bytes: int,
    follow_redirects: bool,
    ssl_context: ssl.SSLContext | None,
) -> _Hop:
    addresses = _resolve(target)
    try:
        sock = _connect(
            target,
            addresses,
            deadline=deadline,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
        )
    except TimeoutError:
        raise OutboundTimeout(f"timed out connecting to {target.display}") from None
    except ssl.SSLCertVerificationError as exc:
        raise TLSError(
            f"TLS certificate of {target.display} not accepted: {exc.verify_message}",
            retryable=False,
        ) from None
    except ssl.SSLError as exc:
        raise TLSError(f"TLS with {target.display} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise ConnectionFailed(f"could not connect to {target.display}: {exc}") from None
    connection = _PinnedConnection(target.host, target.port)
    connection.sock = sock
    try:
        hop_headers: dict[str, Any] = {
            name: value.encode("utf-8") for name, value in headers.items()
        }
        hop_headers["Host"] = target.host_header
        hop_headers["Connection"] = "close"
        try:
            connection.request(method, target.path, body=body, headers=hop_headers)
        except ValueError as exc:  # http.client.InvalidURL among them
            raise InvalidRequest(f"invalid request: {exc}") from None
        response = connection.getresponse()
        # The body of a redirect about to be followed is never read.
        read_body = not (follow_redirects and _is_redirect(response.status, response.msg))
        chunks: list[bytes] = []
        size = 0
        while read_body and size <= max_body_bytes:
            chunk = response.read(min(64 * 1024, max_body_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        return _Hop(
            status=response.status,
            reason=response.reason,
            headers=response.msg,
            body=data[:max_body_bytes],
            truncated=size > max_body_bytes,
        )
    except TimeoutError:
        raise OutboundTimeout(f"{target.display} did not answer in time") from None
    except ssl.SSLError as exc:
        raise TLSError(f"TLS with {target.display} failed: {exc.reason or exc}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise ProtocolError(f"{target.display} broke off: {exc!r}") from None
    finally:
        connection.close()


def _is_redirect(status: int, headers: http.client.HTTPMessage) -> bool:
    return status in _REDIRECT_STATUSES and bool(headers.get("Location"))


def _request_headers(given: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for name, value in (given or {}).items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise InvalidRequest(f"invalid header name {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidRequest(f"the {name} header is set by the platform")
        if not isinstance(value, str) or _BAD_HEADER_VALUE.search(value):
            raise InvalidRequest(f"the {name} header has an invalid value")
        for existing in [n for n in headers if n.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return headers


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """Make one request (following redirects), all within `timeout` seconds.

    `max_redirects=0` returns redirect responses as they are; otherwise up to `max_redirects`
    are followed and one more raises TooManyRedirects. `ssl_context` (for private CAs and tests)
    has its `sslsocket_class` replaced by ours.
    """
    started = time.monotonic()
    deadline = started + timeout
    method = method.upper()
    if not _TOKEN.match(method):
        raise InvalidRequest(f"invalid method {method!r}")
    request_headers = _request_headers(headers)
    data = body.encode("utf-8") if isinstance(body, str) else body
    target = _parse(url)
    redirects = 0
    while True:
        hop = _send(
            target,
            method,
            request_headers,
            data,
            deadline=deadline,
            connect_timeout=connect_timeout,
            max_body_bytes=max_body_bytes,
            follow_redirects=max_redirects > 0,
            ssl_context=ssl_context,
        )
        location = hop.headers.get("Location")
        if not (max_redirects and _is_redirect(hop.status, hop.headers)):
            return Response(
                status=hop.status,
                reason=hop.reason,
                headers=hop.headers,
                body=hop.body,
                truncated=hop.truncated,
                url=url,
                redirects=redirects,
                elapsed=time.monotonic() - started,
            )
        if redirects >= max_redirects:
            raise TooManyRedirects(
                f"more than {max_redirects} redirects, the last from {target.display}"
            )
        redirects += 1
        url = urljoin(url, str(location).strip())
        next_target = _parse(url)
        # What browsers do: a 303 (and a 301/302 answering a POST) turns into a body-less GET.
        if (hop.status == 303 and method != "HEAD") or (
            hop.status in (301, 302) and method == "POST"
        ):
            method = "GET"
            data = None
            request_headers = {
                n: v for n, v in request_headers.items() if n.lower() != "content-type"
            }
        if next_target.origin != target.origin:
            request_headers = {
                n: v for n, v in request_headers.items() if n.lower() not in CREDENTIAL_HEADERS
            }
        target = next_target
