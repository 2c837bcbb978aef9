"""The JSON API, version 1 (CONTRACT.md "HTTP API"), served under /api/v1/ on every host.

The key decides the tenant: authentication activates the key's tenant for the request, and a key
used on another tenant's host is refused. Every error is the JSON envelope of api_errors; a
database outage is a 503 (nothing was accepted), never a 500.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.handlers.wsgi import LimitedStream
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from saas_platform.lib.api_errors import ApiError, api_error_response, error_response
from saas_platform.lib.api_parser import MAX_BODY_BYTES, BadJSON, StrictJSONParser
from saas_platform.lib.db import connection

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="Background jobs API",
    version="1",
    description=(
        "Submit and track background jobs for your tenant. Every error is JSON, "
        '`{"error": {"code": str, "message": str, "details": any}}`, with the statuses each '
        "operation lists."
    ),
    # The apps are named only in dotted strings here (DESIGN.md, "Layers").
    auth=import_string("tenants.auth.ApiKeyAuth")(),
    parser=StrictJSONParser(),
    urls_namespace="api-v1",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return api_error_response(request, exc)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    details = [
        {
            "path": "/".join(str(p) for p in error.get("loc", ())),
            "message": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors
    ]
    return error_response(422, "invalid_request", "The request has invalid values.", details)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(401, "unauthenticated", "Send the header Authorization: Bearer <key>.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400 and isinstance(exc.__cause__, BadJSON):
        return error_response(400, "malformed_json", str(exc.__cause__))
    if exc.status_code == 400:
        return error_response(400, "malformed_request", str(exc))
    return error_response(exc.status_code, "error", str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _too_large()


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_down(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    logger.error("database unavailable: %s", exc)
    # Drop the broken connection so the next request reconnects.
    connection.close_if_unusable_or_obsolete()
    return error_response(
        503, "unavailable", "A backing service is unavailable; nothing was accepted.",
        headers={"Retry-After": "5"},
    )  # fmt: skip


API_ROUTERS = ("jobs.api.router", "jobs.api_workflows.router", "jobs.schedules.api.router")
for _router_path in API_ROUTERS:
    api.add_router("/", import_string(_router_path))


_PLAIN_ERRORS = {
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This endpoint does not accept that method."),
    503: ("unavailable", "A backing service is unavailable; nothing was accepted."),
}


def _enveloped(response: HttpResponse) -> HttpResponse:
    """Errors answered outside the API's handlers (unknown path, wrong method, unknown host)
    still get the error envelope, keeping their status and headers such as Allow."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith(
        "application/json"
    ):
        return response
    code, message = _PLAIN_ERRORS.get(response.status_code, ("error", response.reason_phrase))
    enveloped = error_response(response.status_code, code, message)
    for name in ("Allow", "Retry-After"):
        if response.has_header(name):
            enveloped[name] = response[name]
    return enveloped


def _too_large() -> HttpResponse:
    return error_response(
        413, "too_large", f"Request bodies are limited to {MAX_BODY_BYTES} bytes."
    )


def _read_unsized_body(request: HttpRequest) -> bytes | None:
    """A body sent without Content-Length (chunked), read here up to one byte over the limit.

    Django reads such a body as empty; servers that de-chunk the body and end the stream say so
    with `wsgi.input_terminated` (gunicorn does), and only then is reading to the end safe.
    Returns None when there is nothing to read this way.
    """
    meta = request.META
    if meta.get("CONTENT_LENGTH") or not meta.get("wsgi.input_terminated"):
        return None
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return None
    stream = meta["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        chunk = stream.read(min(64 * 1024, MAX_BODY_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def api_body_limit(get_response: Any) -> Any:
    """Middleware: 413 for API bodies larger than the limit, before Django reads them (declared
    by Content-Length, or counted for a chunked body); every API error in the JSON envelope."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/"):
            response: HttpResponse = get_response(request)
            return response
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            return error_response(400, "malformed_request", "Bad Content-Length header.")
        if length > MAX_BODY_BYTES:
            return _too_large()
        unsized = _read_unsized_body(request)
        if unsized is not None:
            if len(unsized) > MAX_BODY_BYTES:
                return _too_large()
            # From here on Django reads the body as if it had been sent with its length.
            request.META["CONTENT_LENGTH"] = str(len(unsized))
            request._stream = LimitedStream(io.BytesIO(unsized), len(unsized))  # type: ignore[assignment]
        return _enveloped(get_response(request))

    return middleware
