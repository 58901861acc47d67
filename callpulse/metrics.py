"""Prometheus metrics of the API and the workers, one definition for both.

The API serves them at /metrics; each `callpulse worker` serves them on
CALLPULSE_WORKER_METRICS_PORT. Both commands run several processes (uvicorn workers, Celery's
prefork pool), so they set PROMETHEUS_MULTIPROC_DIR to a fresh folder before anything imports
prometheus_client (callpulse/cli.py): every process writes its samples there and the scrape adds
them up. Without it
(tests, `callpulse analyze`) the process's own registry is used.

Queue depths are read from the broker when scraped (LLEN per queue), so they are true even if no
worker is running, which is when they matter."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
QUEUES = ("ingest", "asr", "infer", "rules", "notify")

# Latency buckets from a fast GET to a large upload; task buckets up to a long inference batch.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

HTTP_REQUESTS = Counter("callpulse_http_requests", "HTTP requests by route template, method and status",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("callpulse_http_request_duration_seconds", "HTTP request latency by route template",
                         ["route", "method"], buckets=HTTP_BUCKETS)
TASKS = Counter("callpulse_tasks", "Celery tasks run, by name and outcome (success, failure, retry)",
                ["task", "outcome"])
TASK_DURATION = Histogram("callpulse_task_duration_seconds", "Celery task run time by name", ["task"],
                          buckets=TASK_BUCKETS)
SEGMENTS_ANALYZED = Counter("callpulse_segments_analyzed", "Segments that got a prediction")
AUDIO_SECONDS = Counter("callpulse_audio_analyzed_seconds", "Seconds of speech in segments that got a "
                        "prediction; rate() of it is audio seconds analyzed per second")
MODEL_LOAD = Histogram("callpulse_model_load_seconds", "Time to load the emotion model (once per process)",
                       ["backend"], buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0))
WEBHOOK_DELIVERIES = Counter("callpulse_webhook_deliveries", "Webhook delivery attempts by outcome "
                             "(succeeded, retrying, failed)", ["outcome"])
LIVE_STREAMS = Gauge("callpulse_live_streams_open", "Live-call WebSocket streams open now",
                     multiprocess_mode="livesum")
RETENTION_DELETED = Counter("callpulse_retention_deleted", "What retention deleted: whole recordings "
                            "(kind=recording) or only their media (kind=media)", ["kind"])


class QueueDepthCollector(Collector):
    """callpulse_queue_depth{queue}: messages waiting in each broker queue, read at scrape time."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("callpulse_queue_depth", "Messages waiting in each queue",
                                   labels=["queue"])
        if self.broker_url.startswith(("redis://", "rediss://")):
            import redis

            try:
                client = redis.Redis.from_url(self.broker_url, socket_timeout=2, socket_connect_timeout=2)
                for queue in QUEUES:
                    family.add_metric([queue], float(client.llen(queue)))
            except redis.RedisError as exc:
                # An unreachable broker must not break the scrape; its absence is the signal.
                log.warning("metrics: queue depths unavailable: %s", exc)
            finally:
                client.close()
        yield family


def process_exited(pid: int) -> None:
    """A pool process ended: its live gauges stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


class _Scrape:
    """What one scrape reads: several collectors, as one registry-like object."""

    def __init__(self, *sources: CollectorRegistry | Collector) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def exposition(broker_url: str) -> tuple[bytes, str]:
    """The text a scrape gets: every process's samples plus the queue depths."""
    own: CollectorRegistry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        own = CollectorRegistry()
        multiprocess.MultiProcessCollector(own)
    return generate_latest(_Scrape(own, QueueDepthCollector(broker_url))), CONTENT_TYPE_LATEST


def serve(port: int, broker_url: str, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """The worker's /metrics on ``port``, from a daemon thread of its main process; None (and a
    warning) when the port is taken, so a second worker on one host still runs."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "metrics are at /metrics")
                return
            body, content_type = exposition(broker_url)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # one line per scrape would drown the worker's log

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        log.warning("worker metrics not served: port %d: %s (set CALLPULSE_WORKER_METRICS_PORT to a free "
                    "port per worker on one host, 0 for none)", port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("worker metrics at http://%s:%d/metrics", host, port)
    return server
