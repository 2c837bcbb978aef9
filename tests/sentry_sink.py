"""A local stand-in for Sentry: an HTTP server that keeps the envelopes the real SDK sends.

The DSN `http://<key>@127.0.0.1:<port>/1` points sentry-sdk's own transport here, so what the
tests read is exactly what would have left the process: the raw (decompressed) envelope bytes,
and each item parsed.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: SentrySink

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "br":
            # The SDK prefers brotli whenever the package is installed (weasyprint brings it).
            import brotli

            raw = brotli.decompress(raw)
        with self.server.lock:
            self.server.envelopes.append(raw)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def envelope_items(raw: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """(item header, payload) pairs: after the envelope's header line, each item is a header
    line, then its payload (`length` bytes when the header says, else one line)."""
    items: list[tuple[dict[str, Any], bytes]] = []
    cursor = raw.index(b"\n") + 1
    while cursor < len(raw):
        end = raw.find(b"\n", cursor)
        end = len(raw) if end < 0 else end
        line = raw[cursor:end]
        cursor = end + 1
        if not line.strip():
            continue
        header = json.loads(line)
        if header.get("length") is not None:
            payload = raw[cursor : cursor + header["length"]]
            cursor += header["length"] + 1
        else:
            end = raw.find(b"\n", cursor)
            end = len(raw) if end < 0 else end
            payload = raw[cursor:end]
            cursor = end + 1
        items.append((header, payload))
    return items


class SentrySink(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.envelopes: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server_address[1]}/1"

    def _items(self, item_type: str) -> list[dict[str, Any]]:
        with self.lock:
            raw = list(self.envelopes)
        return [
            json.loads(payload)
            for envelope in raw
            for header, payload in envelope_items(envelope)
            if header.get("type") == item_type
        ]

    def events(self) -> list[dict[str, Any]]:
        """Error events (not transactions, sessions or check-ins) received so far."""
        return self._items("event")

    def checkins(self) -> list[dict[str, Any]]:
        """Sentry Crons check-ins received so far, in the order they arrived."""
        return self._items("check_in")

    def raw_bytes(self) -> bytes:
        with self.lock:
            return b"\n".join(self.envelopes)

    def __enter__(self) -> SentrySink:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
