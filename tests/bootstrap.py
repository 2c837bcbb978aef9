"""Loaded by pytest before Django (`-p tests.bootstrap` in pyproject): the test environment.

1. Real PostgreSQL and Redis: DATABASE_URL / REDIS_URL when given, else embedded servers started
   here for the whole run (saas_platform.lib.embedded).
2. Our own database and keys: pytest-django creates and drops `test_saas_<pid>`; every Redis key
   this run writes starts with `test<pid>:` and is deleted at the end.
3. Production-like settings: DEBUG off, a throwaway SECRET_KEY, static files collected (by the
   `static_files` fixture) into a STATIC_ROOT of this run's own, as the image build does.
4. Two test processes (pytest-xdist, `-n 2` in pyproject): most of the suite's time is spent
   waiting on worker processes, timeouts and outages, not on CPU. The controller loads this
   module first, so its runners inherit its servers (embedded or named) and, each with a pid of
   its own, get their own database, keys, static files and metrics directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_RUN_ID = f"{os.getpid()}"

os.environ.setdefault("SECRET_KEY", "test-secret-key-" + _RUN_ID)
os.environ.setdefault("DEBUG", "false")
os.environ["BASE_DOMAIN"] = "localhost"
os.environ["TEST_DATABASE_NAME"] = f"test_saas_{_RUN_ID}"
os.environ["REDIS_KEY_PREFIX"] = f"test{_RUN_ID}:"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas_platform.settings")
# Always our own: collectstatic must never write into a STATIC_ROOT the caller's shell names.
os.environ["STATIC_ROOT"] = tempfile.mkdtemp(prefix="saas-test-static-")
atexit.register(shutil.rmtree, os.environ["STATIC_ROOT"], ignore_errors=True)
# Ours too, not one inherited: pytest-xdist's runners inherit the controller's environment, and
# in a shared directory each would count the other's workers' jobs (tests/test_observability.py).
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="saas-test-metrics-")
atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
    from saas_platform.lib import embedded

    _data = Path(tempfile.mkdtemp(prefix="saas-test-"))
    # Registered first, so it runs last (atexit is LIFO): after the servers have stopped.
    atexit.register(shutil.rmtree, _data, ignore_errors=True)
    if not os.environ.get("DATABASE_URL"):
        _pg = embedded.start_postgres(_data / "postgres")
        atexit.register(_pg.stop)
        os.environ["DATABASE_URL"] = _pg.url
    if not os.environ.get("REDIS_URL"):
        _redis = embedded.start_redis(_data / "redis")
        atexit.register(_redis.stop)
        os.environ["REDIS_URL"] = _redis.url


def _delete_our_redis_keys() -> None:
    import redis
    from saas_platform.lib.service_urls import redis_with_db

    prefix = os.environ["REDIS_KEY_PREFIX"]
    for db in (0, 1, 2):  # broker, cache and state databases
        try:
            # The URL's own database would win over a db= argument: name it in the URL.
            client = redis.Redis.from_url(redis_with_db(os.environ["REDIS_URL"], db))
            keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.RedisError:
            pass  # the server is gone already (embedded, stopped): nothing to clean


atexit.register(_delete_our_redis_keys)
