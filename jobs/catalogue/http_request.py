"""http.request: one HTTP request to a public URL, through saas_platform.lib.outbound_http.

Retried with backoff (a plain exception; the runner schedules the retry): connection failures,
timeouts, 5xx and 429. Failed at once (PermanentJobError): other 4xx, refused destinations, invalid
requests, bad certificates, redirect loops; trying again cannot change those answers.
"""

from __future__ import annotations

import json
from typing import Any, Final

from saas_platform.lib import outbound_http

from jobs.catalogue import JobContext, JobType, PermanentJobError

METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_URL_LENGTH: Final = 2048
MAX_HEADERS: Final = 50
MAX_HEADER_VALUE_LENGTH: Final = 8192
MAX_BODY_LENGTH: Final = 100_000
DEFAULT_TIMEOUT_SECONDS: Final = 30
MAX_TIMEOUT_SECONDS: Final = 60
# The result lives in the job row (and the Celery result): enough to see what came back.
RESULT_BODY_BYTES: Final = 64 * 1024
RESULT_HEADERS: Final = (
    "content-type",
    "content-length",
    "content-encoding",
    "location",
    "retry-after",
    "etag",
    "last-modified",
    "date",
)
ERROR_BODY_CHARS: Final = 200


class RetryableHTTPStatus(Exception):
    """A 5xx or 429 answer: the runner retries the job with backoff."""


def _any_case(word: str) -> str:
    # JSON Schema patterns are ECMA-262 without flags: spell case-insensitivity out.
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# A header token (RFC 9110), minus the headers outbound_http sets itself.
HEADER_NAME_PATTERN: Final = (
    "^(?!(?:"
    + "|".join(_any_case(name) for name in sorted(outbound_http.RESERVED_HEADERS))
    + ")$)[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
)
# No control characters but tab: CR/LF would let a value start a new header.
HEADER_VALUE_PATTERN: Final = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"


def _clean(text: str) -> str:
    # PostgreSQL's jsonb cannot hold NUL characters; binary answers contain them.
    return text.replace("\x00", "\ufffd")


def _body(args: dict[str, Any]) -> str | None:
    # As a later workflow step without a body of its own, it sends the previous step's result.
    if "body" in args or "input" not in args:
        body: str | None = args.get("body")
        return body
    return json.dumps(args["input"])


def run(context: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    try:
        response = outbound_http.request(
            args["method"],
            args["url"],
            headers=args.get("headers"),
            body=_body(args),
            timeout=float(args.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)),
            max_body_bytes=RESULT_BODY_BYTES,
        )
    except outbound_http.OutboundHTTPError as exc:
        if exc.retryable:
            raise
        raise PermanentJobError(str(exc)) from exc
    status = response.status
    if status >= 400:
        excerpt = _clean(response.text()[:ERROR_BODY_CHARS])
        message = f"HTTP {status} {response.reason} from {response.origin}: {excerpt}"
        if status >= 500 or status == 429:
            raise RetryableHTTPStatus(message)
        raise PermanentJobError(message)
    return {
        "status_code": status,
        "headers": {
            name: _clean(value)
            for name in RESULT_HEADERS
            if (value := response.headers.get(name)) is not None
        },
        "body": _clean(response.text()),
        "body_truncated": response.truncated,
        "elapsed_ms": round(response.elapsed * 1000),
    }


_ARGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {"type": "string", "enum": list(METHODS)},
        "url": {
            "type": "string",
            "format": "uri",
            "maxLength": MAX_URL_LENGTH,
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\x00-\\x20\\x7f]+$",
        },
        "headers": {
            "type": "object",
            "maxProperties": MAX_HEADERS,
            "propertyNames": {"pattern": HEADER_NAME_PATTERN},
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_HEADER_VALUE_LENGTH,
                "pattern": HEADER_VALUE_PATTERN,
            },
        },
        "body": {"type": "string", "maxLength": MAX_BODY_LENGTH},
        "timeout_seconds": {"type": "number", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS},
    },
    "required": ["method", "url"],
    "additionalProperties": False,
}

JOB_TYPE = JobType(
    name="http.request",
    description=(
        "Calls a URL and returns the status, a few headers and up to 64 KiB of the body. "
        "Retried on connection errors, timeouts, 5xx and 429; fails at once on other 4xx. "
        "Private, loopback and other internal addresses are refused unless the operator "
        "allows them; up to 5 redirects are followed, each one checked."
    ),
    args_schema=_ARGS_SCHEMA,
    result_schema={
        "type": "object",
        "properties": {
            "status_code": {"type": "integer"},
            "headers": {"type": "object"},
            "body": {"type": "string"},
            "body_truncated": {"type": "boolean"},
            "elapsed_ms": {"type": "integer"},
        },
    },
    # As a later workflow step: any previous result, sent as JSON when `body` is left out.
    step_args_schema={
        **_ARGS_SCHEMA,
        "properties": {**_ARGS_SCHEMA["properties"], "input": {}},
        "required": ["method", "url", "input"],
    },
    run=run,
    # Room for the longest timeout plus name resolution and TLS.
    time_limit_seconds=MAX_TIMEOUT_SECONDS + 30,
    max_attempts=5,
    retry_backoff_seconds=5.0,
    examples=(
        {"method": "GET", "url": "https://example.com/"},
        {"method": "POST", "url": "http://example.com/hook", "body": "{}", "timeout_seconds": 5},
    ),
)
