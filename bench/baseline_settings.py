"""Django settings for the baseline: plain Celery + django-celery-results, no tenancy.

Only what django-celery-results needs, on the stock PostgreSQL backend (no django-tenants, no
search_path), with its own database. The Celery settings copy the product's reliability and
serialization choices (acks_late, prefetch 1, JSON, extended results) so that the only
differences measured are the ones tenancy and the Job row add. Whether Celery keeps the database
connection open across tasks is chosen per worker by BENCH_DB_REUSE (see baseline_app).
"""

from __future__ import annotations

import os

from saas_platform.lib.service_urls import database_from_url

SECRET_KEY = os.environ.get("SECRET_KEY") or "bench-baseline-secret-key"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["django.contrib.contenttypes", "django_celery_results"]

DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
# The same connection settings as the product (platform/settings.py).
DATABASES["default"]["CONN_MAX_AGE"] = 600
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

_REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "")
CELERY_BROKER_URL = os.environ["REDIS_URL"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = False
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 2 * 60 * 60,
    "global_keyprefix": _REDIS_KEY_PREFIX,
}
CELERY_RESULT_EXPIRES = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True

# The product's logging, so that both workers spend the same on their INFO lines per task.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
