"""What the OpenAPI document says that every operation shares: the error responses (the envelope
of api_errors), their headers, and what the strict parser refuses in any request body.

Routes declare what they can answer with `route_doc(...)`, the status codes only; descriptions,
schemas and headers are written once, here, so the document cannot drift route by route.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from saas_platform.lib.api_errors import ErrorOut
from saas_platform.lib.api_parser import MAX_BODY_BYTES, MAX_DEPTH, STRING_RULE

BODY_RULES = (
    f"JSON in UTF-8, at most {MAX_BODY_BYTES} bytes (1 MiB; a larger body is a 413) and nested "
    f"at most {MAX_DEPTH} levels deep (the body itself is level 1). Every string and object key "
    f"in it, `args` included, has {STRING_RULE}; every number is finite (NaN, Infinity and "
    "numbers beyond the double range such as 1e999 are refused, as are integers of more than "
    "4300 digits). A body breaking these rules is a 400; valid JSON with invalid values, unknown "
    "fields included, is a 422."
)

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}

ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {
        "description": "Malformed: a body that is not acceptable JSON (see the request body), "
        "NUL or a lone surrogate in the query string, or a bad Content-Length or "
        "Idempotency-Key header."
    },
    401: {
        "description": "No API key, or a key that is not valid, was revoked, has expired or "
        "belongs to another tenant's host."
    },
    403: {
        "description": "The key lacks the scope this operation needs, or the tenant is suspended."
    },
    404: {
        "description": "Not found: no tenant lives at this host, or (for a job or a workflow) "
        "there is no such job or workflow; another tenant's are not found either."
    },
    409: {
        "description": "A conflict: the Idempotency-Key was used before with a different body, "
        "or the job's (the workflow's) state does not allow this."
    },
    413: {"description": f"The request body is larger than {MAX_BODY_BYTES} bytes."},
    422: {
        "description": "Valid JSON with invalid values: an unknown or missing field, a value out "
        "of range, an unknown job type, args that do not fit the job type's schema, a cursor the "
        "API did not return; for a workflow, a step that cannot follow the one before it "
        "(`details.step` names it)."
    },
    429: {
        "description": "Over the tenant's submission rate or monthly job quota; nothing was "
        "accepted.",
        "headers": _RETRY_AFTER,
    },
    503: {
        "description": "A backing service is unavailable; nothing was accepted.",
        "headers": _RETRY_AFTER,
    },
}

# Any operation can answer these, whatever it does: 400 for a bad Content-Length, 401 and 403
# from the key check, 404 for a host no tenant lives at, 503 when PostgreSQL is down.
COMMON_ERRORS = (400, 401, 403, 404, 503)
# And an operation that takes a JSON body can also answer these.
BODY_ERRORS = (413, 422)


def route_doc(
    success: Mapping[int, Any],
    *errors: int,
    body: bool = False,
    parameters: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The `response` and `openapi_extra` arguments of a ninja route.

    `success` maps the route's success statuses to their schemas; `errors` are the statuses it
    can answer besides COMMON_ERRORS (and BODY_ERRORS when it takes a `body`); `parameters` are
    OpenAPI parameters the view reads itself (headers) rather than through its signature. The
    error responses only document: errors are answered by the API's exception handlers, which
    ninja does not validate against a response schema.
    """
    statuses = sorted({*COMMON_ERRORS, *(BODY_ERRORS if body else ()), *errors})
    extra: dict[str, Any] = {
        # Keyed by int like ninja's own responses, so openapi_extra merges into them.
        # Copies: ninja merges these into each operation's document and may change them there.
        "responses": {status: copy.deepcopy(ERROR_RESPONSES[status]) for status in statuses}
    }
    if parameters:
        extra["parameters"] = [copy.deepcopy(dict(parameter)) for parameter in parameters]
    if body:
        extra["requestBody"] = {"description": BODY_RULES}
    return {
        "response": {**success, **dict.fromkeys(statuses, ErrorOut)},
        "openapi_extra": extra,
    }
