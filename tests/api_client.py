"""A thin JSON client for the API, through Django's test client (the full middleware stack)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.test import Client


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code: str = self.body["error"]["code"]
            return code
        return None


def call(
    method: str,
    path: str,
    *,
    key: str | None,
    host: str = "localhost",
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    extra = {
        f"HTTP_{name.upper().replace('-', '_')}": value for name, value in (headers or {}).items()
    }
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    client = Client(HTTP_HOST=host)
    kwargs: dict[str, Any] = {"content_type": "application/json", **extra}
    if data is not None:
        kwargs["data"] = data
    response = getattr(client, method.lower())(f"/api/v1{path}", **kwargs)
    try:
        parsed = json.loads(response.content) if response.content else None
    except ValueError:
        parsed = response.content
    return Answer(response.status_code, parsed, dict(response.headers))
