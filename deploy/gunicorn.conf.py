"""gunicorn settings: `gunicorn -c deploy/gunicorn.conf.py saas_platform.wsgi`."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from typing import Any

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

# Prometheus multiprocess mode (saas_platform.observability.metrics): every worker writes its
# values to files here and /metrics adds them up. Set in the master, before any worker imports
# prometheus_client, and emptied at each start: files of a previous run's workers would count.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
    prefix="gunicorn-metrics-"
)
shutil.rmtree(_metrics_dir, ignore_errors=True)
os.makedirs(_metrics_dir, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def child_exit(server: Any, worker: Any) -> None:
    # A recycled worker's live gauges go with it; its counters stay counted.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
