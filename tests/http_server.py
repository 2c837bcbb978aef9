"""A local HTTP(S) server for tests of outbound HTTP: never the internet."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    """Routes: /echo, /status/<code>, /redirect?to=&code=, /loop, /big?bytes=, /slow?seconds=,
    /drip?bytes=&interval=, /flaky?key=&failures=, /switch?key=, /binary, /latin1."""

    protocol_version = "HTTP/1.1"
    server: LocalServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        self.server.requests.append(seen)
        route = parts.path
        if route == "/echo":
            self._reply(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        elif route.startswith("/status/"):
            code = int(route.rsplit("/", 1)[1])
            self._reply(code, f"status {code}".encode(), {"Retry-After": "1", "X-Other": "no"})
        elif route == "/redirect":
            self._reply(int(query.get("code", "302")), b"moved", {"Location": query["to"]})
        elif route == "/loop":
            self._reply(302, b"again", {"Location": "/loop"})
        elif route == "/big":
            self._reply(200, b"x" * int(query["bytes"]))
        elif route == "/slow":
            time.sleep(float(query["seconds"]))
            self._reply(200, b"late")
        elif route == "/drip":
            count = int(query["bytes"])
            self.send_response(200)
            self.send_header("Content-Length", str(count))
            self.end_headers()
            for _ in range(count):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(float(query["interval"]))
        elif route == "/flaky":
            with self.server.lock:
                self.server.counters[query["key"]] += 1
                calls = self.server.counters[query["key"]]
            if calls <= int(query["failures"]):
                self._reply(503, b"try again")
            else:
                self._reply(200, f"ok after {calls}".encode())
        elif route == "/switch":
            # 500 until the test sets server.switches[key] to another status.
            code = self.server.switches.get(query["key"], 500)
            self._reply(code, f"switch {query['key']}: {code}".encode())
        elif route == "/binary":
            self._reply(
                200, b"\x00\x01\xffbin\x00ary", {"Content-Type": "application/octet-stream"}
            )
        elif route == "/latin1":
            self._reply(
                200, "café".encode("latin-1"), {"Content-Type": "text/plain; charset=latin-1"}
            )
        else:
            self._reply(404, b"not found")


class LocalServer(ThreadingHTTPServer):
    """An HTTP(S) server on 127.0.0.1 in a thread; `requests` records what it was sent."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.requests: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self.switches: dict[str, int] = {}
        self.lock = threading.Lock()
        self.port = self.server_address[1]
        self.scheme = "https" if ssl_context else "http"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (body cap, timeouts) are part of the tests

    def __enter__(self) -> LocalServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
