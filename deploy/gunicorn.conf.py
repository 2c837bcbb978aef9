"""gunicorn settings: `gunicorn -c deploy/gunicorn.conf.py saas_platform.wsgi`."""

from __future__ import annotations

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Sync workers: every request holds one database connection whose search_path is set per request;
# size the database's max_connections for workers x web replicas (no transaction pooler).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
timeout = 30
graceful_timeout = 30
# Recycling bounds slow leaks; at thousands of requests a second a low value restarts workers
# every few seconds, and each restart shows up as a latency spike.
max_requests = 50_000
max_requests_jitter = 5_000
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
