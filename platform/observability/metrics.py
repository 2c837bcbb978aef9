"""Serving the Prometheus metrics (saas_platform.lib.metrics, plus gauges read when scraped).

- The web: `GET /metrics` on the public host, with `Authorization: Bearer <METRICS_TOKEN>`; 404
  when METRICS_TOKEN is unset (the path does not exist), 401 for a missing or wrong token. It
  adds up the files of every process sharing its PROMETHEUS_MULTIPROC_DIR: its gunicorn
  siblings, and the Celery workers of the same host when they share the directory.
- A worker on a host of its own: METRICS_PORT makes its main process serve the same page
  (without a token: bind it to a private network) for its own pool children. The beat, a
  process of its own wherever it runs, serves its page (beat_lag_seconds) the same way.

Queue depth is not a counter any process keeps: it is read from the broker at each scrape.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from saas_platform.lib.broker import queue_depth

logger = logging.getLogger(__name__)


class BrokerQueueCollector(Collector):
    """`jobs_queue_depth{queue}`: messages waiting in each broker queue, every priority."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "jobs_queue_depth", "Messages waiting in a broker queue.", labels=["queue"]
        )
        try:
            for queue in settings.CELERY_TASK_QUEUES:
                family.add_metric([queue.name], queue_depth(queue.name))
        except redis.RedisError as exc:
            logger.warning("queue depth not read: %s", exc)
            return
        yield family


def metrics_registry(*, queue_depth: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if queue_depth:
        registry.register(BrokerQueueCollector())
    return registry


def _token_ok(request: HttpRequest, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    token: str = settings.METRICS_TOKEN
    if not token:
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    if not _token_ok(request, token):
        response = HttpResponse("operator token required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)


def worker_metrics_serve(port: int, *, queue_depth: bool = True) -> None:
    """A worker main process's (or the beat's) own /metrics (prometheus_client's HTTP server
    thread)."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=metrics_registry(queue_depth=queue_depth))
    logger.info("metrics served on port %s", port)
