"""The project wiring (settings, URLs, Celery app, tenant plumbing), imported as `saas_platform`.

The modules live in platform/, one level up. That folder must never hold an __init__.py: from the
repository root it would shadow the standard library's `platform` module, which uuid, Celery,
kombu, billiard, sentry-sdk and gunicorn all import. So this package lives here and adds platform/
to its search path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__path__.append(str(Path(__file__).resolve().parent.parent))


def __getattr__(name: str) -> Any:
    # `celery -A saas_platform` looks for an `app` attribute; load the Celery app only when asked,
    # so importing settings never drags Celery in.
    if name in ("app", "celery_app"):
        from saas_platform.celery_app import app

        return app
    raise AttributeError(name)
