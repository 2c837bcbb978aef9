"""Signed-in Django test clients on a tenant's host, for the portal's page tests."""

from __future__ import annotations

from django.test import Client

ACME = "acme.localhost"
GLOBEX = "globex.localhost"
PASSWORDS = {
    "alice@acme.example": "alice-pw-1",
    "bob@acme.example": "bob-pw-1",
    "carol@globex.example": "carol-pw-1",
}


def portal_client(host: str, email: str | None = None, **options: object) -> Client:
    """A client on `host`, signed in through the login form when `email` is given."""
    client = Client(HTTP_HOST=host, raise_request_exception=True, **options)  # type: ignore[arg-type]
    if email is not None:
        response = client.post("/login/", {"username": email, "password": PASSWORDS[email]})
        assert response.status_code == 302, response.content.decode()[:2000]
    return client
