"""Prometheus metrics, served over HTTP for a scraper.

    address = metrics.serve("127.0.0.1:9464")   # None when "off"
    metrics.observe("/versatil.ml.v1.DatasetService/GetDataset", grpc.StatusCode.OK, 0.0012)

``server.rpc.dispatch`` calls ``observe`` once per RPC. The RPC metrics have the
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

With several worker processes (``VERSATIL_WORKERS``) the parent calls
``serve_workers`` before it forks them: each worker then writes its samples
into a file of a private directory (prometheus-client's multiprocess mode) and
the parent serves their sum on the one port, so a scrape sees the whole
service. The pool gauges are then each worker's pool as of its last call.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
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

# The pool as each worker reports it, in multiprocess mode only (one process
# reads its own pool at scrape time: see PoolCollector). Made by serve_workers.
_worker_pool: tuple[Gauge, Gauge] | None = None


def _zero_database_errors() -> None:
    for code in DATABASE_ERRORS:
        database_errors.labels(code.name)  # At 0 from the start, so that rate() and alerts see them.


_zero_database_errors()


def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
    """Count the RPC ``method`` (``/package.Service/Method``) that ended with ``code``."""
    service, _, name = method.lstrip("/").partition("/")
    handled.labels("unary", service, name, code.name).inc()
    handling_seconds.labels("unary", service, name).observe(seconds)
    if code in DATABASE_ERRORS:
        database_errors.labels(code.name).inc()
    if _worker_pool:
        _report_pool()


def _report_pool() -> None:
    database = models.database
    connections, most = _worker_pool
    connections.labels("in_use").set(len(database._in_use))
    connections.labels("idle").set(len(database._connections))
    most.set(database._max_connections or 0)


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
    return _serve(listen, REGISTRY)


def serve_workers(listen: str | None) -> tuple[WSGIServer, str] | None:
    """``serve`` for the parent of worker processes; call it before they fork.

    Every metric written from then on, in this process or a child, goes to a
    file in a private directory, and ``/metrics`` is their sum.
    """
    global _worker_pool
    if not listen or listen.lower() == "off":
        return None
    directory = tempfile.mkdtemp(prefix="versatil-metrics-")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)
    served = _serve(listen, registry)
    if served is None:
        shutil.rmtree(directory, ignore_errors=True)
        return None
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    for metric in (handled, handling_seconds, database_errors):
        metric.clear()  # Children made before the switch hold in-memory values.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.get_value_class()  # Chosen at import; switched now, before any fork.
    _zero_database_errors()
    # Not registered: the parent serves the sum of the workers' files, these included.
    _worker_pool = (
        Gauge("versatil_db_pool_connections", "Database connections in the pools, by state.", ["state"],
              registry=None, multiprocess_mode="livesum"),
        Gauge("versatil_db_pool_max_connections", "The most connections the pools open.",
              registry=None, multiprocess_mode="livesum"),
    )
    os.register_at_fork(after_in_child=_report_pool)  # A worker's pool counts before its first call.
    return served


def _serve(listen: str | None, registry: CollectorRegistry) -> tuple[WSGIServer, str] | None:
    if not listen or listen.lower() == "off":
        return None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        server, _ = start_http_server(int(port), host, registry)
    except OSError as error:
        log.warning("metrics are off: cannot listen on %s: %s", listen, error)
        return None
    bound = server.server_address[1]
    return server, f"{'[' + host + ']' if ':' in host else host}:{bound}"
