from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from saas_platform.lib.db import connection


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness plus a database round trip; says which schema served the request."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        row = cursor.fetchone()
    return JsonResponse({"status": "ok", "schema": row[0] if row else None})
