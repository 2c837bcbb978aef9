"""The product's URL confs plus `/bench/trivial`, for bench.api_submit's baseline request.

`urlpatterns` is the tenant-host URL conf (ROOT_URLCONF in bench.web_settings) and
`public_urlpatterns` the public-host one (PUBLIC_SCHEMA_URLCONF): each is the product's list with
one trivial JSON view in front, so both hosts answer it through the same middleware stack.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.csrf import csrf_exempt
from saas_platform import urls_public, urls_tenant


@csrf_exempt  # the benchmark POSTs the submit request's body and headers here, unchanged
def trivial(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


_TRIVIAL = path("bench/trivial", trivial, name="bench-trivial")

urlpatterns: list[URLPattern | URLResolver] = [_TRIVIAL, *urls_tenant.urlpatterns]
public_urlpatterns: list[URLPattern | URLResolver] = [_TRIVIAL, *urls_public.urlpatterns]
