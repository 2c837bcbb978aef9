"""Each request's context: a request id (the client's X-Request-ID when it is a sane one, else a
new one, echoed in the response) on every log line and Sentry event of the request
(saas_platform.lib.telemetry). TenantHostMiddleware adds the tenant once it has found it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from saas_platform.lib.telemetry import context_bind, context_clear

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy or client may hand us: printable, short, no spaces (it goes into log lines).
_GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """First in MIDDLEWARE: the previous request's context is gone before anything logs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _GOOD_REQUEST_ID.match(given) else uuid.uuid4().hex
        context_clear()
        context_bind(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response
