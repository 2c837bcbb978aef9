"""The product's settings with `/bench/trivial` added to both URL confs (bench.web_urls).

Used only by the gunicorn that bench.api_submit starts: same middleware, database, Redis and
logging as saas_platform.settings; only the two URL confs differ.

PUBLIC_SCHEMA_URLCONF must stay a module path (django-tenants compares it as a string), so the
public list is served by a small module registered here that reads bench.web_urls lazily: the
URL conf is imported on the first request, after the app registry is ready.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from saas_platform.settings import *  # noqa: F403

ROOT_URLCONF = "bench.web_urls"
PUBLIC_SCHEMA_URLCONF = "bench.web_urls_public"


def _public_urlconf_attribute(name: str) -> Any:
    if name == "urlpatterns":
        from bench.web_urls import public_urlpatterns

        return public_urlpatterns
    raise AttributeError(name)


_public_urlconf = types.ModuleType(PUBLIC_SCHEMA_URLCONF, "Public host with /bench/trivial.")
vars(_public_urlconf)["__getattr__"] = _public_urlconf_attribute  # PEP 562: lazy attributes
sys.modules.setdefault(PUBLIC_SCHEMA_URLCONF, _public_urlconf)
