"""Prometheus metrics, served over HTTP for a scraper.

    address = metrics.serve("127.0.0.1:9464")   # None when "off"
    metrics.observe("/versatil.ml.v1.DatasetService/GetDataset", grpc.StatusCode.OK, 0.0012)

``server.routing`` calls ``observe`` once per RPC. The RPC metrics have the
names and labels of go-grpc-prometheus, so the usual gRPC dashboards and alerts
work unchanged:

| metric | labels | what |
|---|---|---|
| ``grpc_server_handled_total`` | ``grpc_type``, ``grpc_service``, ``grpc_method``, ``grpc_code`` | RPCs completed, by method and status code |
| ``grpc_server_handling_seconds`` | ``grpc_type``, ``grpc_service``, ``grpc_method`` | histogram of RPC latency |
| ``versatil_db_errors_total`` | ``code`` | RPCs that failed for a database reason: unreachable (``UNAVAILABLE``), conflicting transaction or stale etag (``ABORTED``), statement timeout (``DEADLINE_EXCEEDED``), anything else (``INTERNAL``) |
| ``versatil_db_pool_connections`` | ``state`` (``in_use``, ``idle``) | the connection pool, read at scrape time |
| ``versatil_db_pool_max_connections`` | | the pool's size |

Beside them the client library's own ``process_*`` and ``python_*`` metrics.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import models

DATABASE_ERRORS = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
# From a primary-key read (about a millisecond) to a 1000-row batch under load.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

log = logging.getLogger(__name__)

disable_created_metrics()  # A ``*_created`` twin of every series doubles the scrape for nothing here.

handled = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Time the server spent handling an RPC, by method.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
database_errors = Counter(
    "versatil_db_errors_total",
    "RPCs that failed for a database reason, by status code.",
    ["code"],
)
for _code in DATABASE_ERRORS:
    database_errors.labels(_code.name)  # At 0 from the start, so that rate() and alerts see them.


def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
    """Count the RPC ``method`` (``/package.Service/Method``) that ended with ``code``."""
    service, _, name = method.lstrip("/").partition("/")
    handled.labels("unary", service, name, code.name).inc()
    handling_seconds.labels("unary", service, name).observe(seconds)
    if code in DATABASE_ERRORS:
        database_errors.labels(code.name).inc()


class PoolCollector(Collector):
    """The pool of ``models.database`` as it is at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        database = models.database
        connections = GaugeMetricFamily(
            "versatil_db_pool_connections", "Database connections in the pool, by state.", labels=["state"]
        )
        connections.add_metric(["in_use"], len(database._in_use))
        connections.add_metric(["idle"], len(database._connections))
        yield connections
        yield GaugeMetricFamily(
            "versatil_db_pool_max_connections", "The most connections the pool opens.",
            value=database._max_connections or 0,
        )


REGISTRY.register(PoolCollector())


def serve(listen: str | None) -> tuple[WSGIServer, str] | None:
    """Serve ``/metrics`` on ``listen`` (``host:port``; port 0 picks one) in a daemon thread.

    Returns the server and the address it listens on, or None when ``listen``
    is ``off`` or the address cannot be had: a busy metrics port is reported
    and the service runs on without metrics rather than not at all.
    """
    if not listen or listen.lower() == "off":
        return None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        server, _ = start_http_server(int(port), host)
    except OSError as error:
        log.warning("metrics are off: cannot listen on %s: %s", listen, error)
        return None
    bound = server.server_address[1]
    return server, f"{'[' + host + ']' if ':' in host else host}:{bound}"
