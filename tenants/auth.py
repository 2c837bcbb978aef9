"""API-key authentication and scopes for the JSON API (CONTRACT.md, "HTTP API").

The key decides the tenant: authenticating activates the key's tenant for the request, and a key
used on another tenant's host is refused. Every refusal is an ApiError, which the API answers
with its error envelope.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer
from saas_platform.lib.api_errors import ApiError
from saas_platform.lib.tenant_context import tenant_enter

from tenants.models import ApiKey, Tenant
from tenants.selectors import KeyRefusal, apikey_authenticate

_REFUSALS = {
    KeyRefusal.MALFORMED: (401, "invalid_api_key", "The API key is not valid."),
    KeyRefusal.UNKNOWN: (401, "invalid_api_key", "The API key is not valid."),
    KeyRefusal.REVOKED: (401, "revoked_api_key", "The API key was revoked."),
    KeyRefusal.EXPIRED: (401, "expired_api_key", "The API key has expired."),
    KeyRefusal.SUSPENDED: (403, "tenant_suspended", "This tenant is suspended."),
}


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`; activates the key's tenant. Never logs the key."""

    # Read by ninja into the security scheme; camelCase is the OpenAPI field's own spelling.
    openapi_bearerFormat = "API key"
    openapi_description = (
        "An API key of the tenant, made with `manage.py apikey_create`: "
        "`Authorization: Bearer <key>`. The key decides the tenant; on another tenant's host it "
        "is refused (401)."
    )

    def __call__(self, request: HttpRequest) -> ApiKey:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthenticated", "Send the header Authorization: Bearer <key>.")
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        check = apikey_authenticate(token)
        if check.api_key is None:
            assert check.refusal is not None
            status, code, message = _REFUSALS[check.refusal]
            raise ApiError(status, code, message)
        api_key = check.api_key
        host_tenant = getattr(request, "tenant", None)
        # The public host carries django-tenants' FakeTenant, not a Tenant: any valid key is
        # accepted there, and activates its tenant.
        if isinstance(host_tenant, Tenant) and host_tenant.pk != api_key.tenant_id:
            raise ApiError(401, "wrong_host", "This key belongs to another tenant's host.")
        request.tenant = api_key.tenant  # type: ignore[attr-defined]
        tenant_enter(api_key.tenant)
        return api_key


def require_scope(request: HttpRequest, scope: str) -> ApiKey:
    """The request's key, if it has `scope`; else a 403."""
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    if scope not in api_key.scopes:
        raise ApiError(403, "insufficient_scope", f"This key lacks the scope {scope}.")
    return api_key
