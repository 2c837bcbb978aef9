"""Pages render in a real browser under the production server: gunicorn with DEBUG off.

Black-box testing found /static/ answering 404 there (the admin unstyled) and /api/v1/docs blank
(Swagger UI loaded from a CDN). Static files now come from WhiteNoise with hashed names and the
docs use django-ninja's bundled Swagger UI: nothing is loaded from anywhere but the server
(STYLE.md "Static files are part of the product"). Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re

import pytest

from tests.servers import http_call

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# What the admin's CSS sets: base.css paints the header, login.css rounds the login box.
ADMIN_SECONDARY = "rgb(65, 118, 144)"  # --secondary: #417690
HASHED_STATIC = re.compile(r"/static/.+\.[0-9a-f]{12}\.(css|js)$")


def test_the_admin_login_form_renders_with_its_css_and_nothing_from_elsewhere(web, page):
    origin = web.origin("localhost")
    response = page.page.goto(f"{origin}/admin/login/")
    assert response is not None
    assert response.status == 200

    form = page.page.locator("form#login-form")
    assert form.is_visible()
    assert page.page.locator("#id_username").is_visible()
    assert page.page.locator("#id_password").is_visible()
    assert page.page.locator("#login-form input[type=submit]").is_visible()
    header = page.page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor")
    assert header == ADMIN_SECONDARY, "base.css did not apply"
    corners = page.page.eval_on_selector("#container", "e => getComputedStyle(e).borderRadius")
    assert corners == "4px", "login.css did not apply"

    stylesheets = [url for url in page.requests if url.endswith(".css")]
    assert stylesheets, page.requests
    assert all(HASHED_STATIC.search(url) for url in stylesheets), stylesheets
    assert page.requests_elsewhere(origin) == []
    page.screenshot("admin-login")


@pytest.mark.parametrize("host", ["localhost", "acme.localhost"])
def test_the_api_docs_render_every_operation_with_the_bundled_swagger_ui(web, page, host):
    origin = web.origin(host)
    spec = http_call(web.port, "GET", "/api/v1/openapi.json", host=host)
    assert spec.status == 200, spec.body[:500]
    operations = sum(len(methods) for methods in spec.json()["paths"].values())
    assert operations > 5

    response = page.page.goto(f"{origin}/api/v1/docs")
    assert response is not None
    assert response.status == 200
    # Swagger UI builds the page from the OpenAPI document in the browser: one block each.
    blocks = page.page.locator("#swagger-ui .opblock")
    blocks.first.wait_for(state="visible", timeout=15_000)
    assert blocks.count() == operations
    assert page.page.locator(".opblock-summary-path", has_text="/api/v1/jobs").first.is_visible()
    title = page.page.locator("#swagger-ui .info .title")
    assert "Background jobs API" in title.inner_text()

    assets = [url for url in page.requests if "swagger-ui" in url]
    assert assets, page.requests
    assert all(HASHED_STATIC.search(url) for url in assets), assets
    assert page.requests_elsewhere(origin) == []
    page.screenshot(f"api-docs-{host}")
