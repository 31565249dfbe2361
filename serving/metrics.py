"""Prometheus metrics of the scoring server, correct with several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``modelfmt serve`` sets it to a fresh directory before its
workers start), every worker writes its values to files there and ``/metrics`` sums them over all
workers; without it (the app under another WSGI server, one process) the default registry is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets from sub-millisecond (1-row requests) to the default timeout.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Adaptive batching: rows and requests per model call, and how long the oldest request of a call queued.
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
_REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


KNOWN_PATHS = frozenset({"/ping", "/health", "/version", "/metadata", "/metrics", "/invocations"})


class Metrics:
    """The server's metrics; one per process (see :func:`get`), created after gunicorn forks a worker."""

    def __init__(self, known_paths: Iterable[str] = KNOWN_PATHS) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.known_paths = frozenset(known_paths)
        self.requests = Counter(
            "modelfmt_requests", "HTTP requests answered, by endpoint and status.", ["endpoint", "status"]
        )
        self.latency = Histogram(
            "modelfmt_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=_BUCKETS,
        )
        self.rows = Counter("modelfmt_rows_scored", "Input rows scored by the model.")
        self.timeouts = Counter("modelfmt_request_timeouts", "Requests answered 504 for running past the timeout.")
        self.load_seconds = Gauge(
            "modelfmt_model_load_seconds", "Seconds a worker took to load the model.", multiprocess_mode="max"
        )
        self.batch_rows = Histogram(
            "modelfmt_batch_rows", "Input rows per model call (adaptive batching).", buckets=_ROW_BUCKETS
        )
        self.batch_requests = Histogram(
            "modelfmt_batch_requests", "Requests per model call (adaptive batching).", buckets=_REQUEST_BUCKETS
        )
        self.batch_wait = Histogram(
            "modelfmt_batch_queue_wait_seconds",
            "Time the oldest request of a model call waited in the batching queue.",
            buckets=_WAIT_BUCKETS,
        )
        self._children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def add_known_paths(self, paths: Iterable[str]) -> None:
        """Label requests to ``paths`` by their path too (the app adds every fixed route it mounts)."""
        self.known_paths = self.known_paths | frozenset(paths)

    def endpoint(self, path: str) -> str:
        """The ``endpoint`` label of a path: known routes by name, everything else ``other`` (bounded labels)."""
        return path if path in self.known_paths else "other"

    def observe(self, path: str, status: str, seconds: float) -> None:
        """Count one answered request."""
        endpoint = self.endpoint(path)
        key = (endpoint, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(endpoint, status)
        child.inc()
        lat = self._latency_children.get(endpoint)
        if lat is None:
            lat = self._latency_children[endpoint] = self.latency.labels(endpoint)
        lat.observe(seconds)

    def observe_batch(self, rows: int, requests: int, waited: float) -> None:
        """Count one model call of the batcher: its rows, its requests, its oldest request's queue wait."""
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.batch_wait.observe(waited)

    def wrap(self, wsgi_app: Callable) -> Callable:
        """A WSGI middleware around ``wsgi_app`` that times and counts every request."""

        def app(environ: dict, start_response: Callable) -> Any:
            started = time.perf_counter()
            status_holder: list[str] = []

            def _start_response(status: str, headers: list, exc_info: Any = None) -> Any:
                status_holder.append(status[:3])
                return start_response(status, headers, exc_info)

            try:
                return wsgi_app(environ, _start_response)
            finally:
                self.observe(
                    environ.get("PATH_INFO", ""),
                    status_holder[-1] if status_holder else "500",
                    time.perf_counter() - started,
                )

        return app


_METRICS: Metrics | None = None


def get() -> Metrics:
    """This process's :class:`Metrics` (collectors register once per process, however many apps)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS


def render() -> tuple[bytes, str]:
    """``(body, content type)`` of the Prometheus text exposition, summed over workers when multiprocess."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry), CONTENT_TYPE
    return generate_latest(REGISTRY), CONTENT_TYPE


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (called by the gunicorn master when a worker exits)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
