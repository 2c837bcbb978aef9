"""Strict JSON request bodies for the API.

PostgreSQL's jsonb refuses some things Python's json module accepts (NUL characters, lone UTF-16
surrogates, NaN and infinities), and the standard parser recurses on nesting. Refusing them here
turns what would be a 500 deep in a save into a clear 400 before anything is written.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from ninja.parser import Parser
from saas_platform.lib.api_errors import ApiError

MAX_DEPTH = 32
MAX_BODY_BYTES = 1024 * 1024
# What _check_string refuses, for the OpenAPI document. The pattern says only the NUL part:
# a regex engine without surrogates (Rust's, which schemathesis validates with) refuses a pattern
# naming them, and its strings cannot hold a lone surrogate anyway; the rule says both.
STRING_PATTERN = r"^[^\x00]*$"
STRING_RULE = "no NUL (U+0000) and no lone surrogate (U+D800 to U+DFFF)"


class BadJSON(ValueError):
    """A body that is not acceptable JSON; the message says why."""


def _reject_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadJSON(f"number {text[:40]} is out of range")
    return value


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise BadJSON("strings may not contain \\u0000")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadJSON("strings may not contain lone surrogates") from None


def check_document(document: Any) -> None:
    """Walk the parsed document (iteratively): depth, strings and keys."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadJSON(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, str):
            _check_string(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_string(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)


def loads_strict(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJSON("the body is not UTF-8") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadJSON(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BadJSON(str(exc)) from None
    check_document(document)
    return document


class StrictJSONParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        return loads_strict(request.body)

    def parse_querydict(
        self, data: MultiValueDict[str, Any], list_fields: list[str], request: HttpRequest
    ) -> dict[str, Any]:
        # Query strings reach SQL too: a NUL there is a 400 here, not a DataError (500) later.
        for key, values in data.lists():
            try:
                _check_string(key)
                for value in values:
                    if isinstance(value, str):
                        _check_string(value)
            except BadJSON as exc:
                raise ApiError(400, "malformed_request", f"query parameters: {exc}") from None
        return super().parse_querydict(data, list_fields, request)
