"""The API's error envelope (CONTRACT.md): {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from ninja import Field, Schema


class ApiError(Exception):
    """Raised by endpoints to answer with an error; never a 500 for client input."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


class ErrorBody(Schema):
    code: str = Field(..., description="What went wrong, for programs: a stable snake_case code.")
    message: str = Field(..., description="What went wrong, for people.")
    details: Any = Field(
        ..., description="More about it, shaped by the code (null when there is nothing more)."
    )


class ErrorOut(Schema):
    """Every error the API answers (CONTRACT.md): {"error": {"code", "message", "details"}}."""

    error: ErrorBody


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse(
        {"error": {"code": code, "message": message, "details": details}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def api_error_response(request: HttpRequest, exc: ApiError) -> JsonResponse:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
