"""The gRPC server: resource services, health checking and reflection.

    server, port = create_server(settings)   # database already connected
    server.start()

``serve`` is the whole process (what ``python -m server`` runs): it starts the
embedded PostgreSQL when no ``DATABASE_URL`` is set, checks the schema, serves,
and on SIGTERM or SIGINT stops accepting calls, lets in-flight ones finish
within the grace period and closes the connection pool.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import models
from server import database as db
from server import workers
from server.health import DatabaseWatch, EmbeddedKeeper
from server import lineage
from server import metrics, tracing
from server import auth, encryption, limits, tls
from server.config import Settings
from server.pagination import PageTokens
from server.routing import bind, resource_services

log = logging.getLogger("versatil")

PAGE_TOKEN_SETTING = "page_token_key"


def page_token_key(settings: Settings) -> bytes:
    """The configured key, or the one the first migration stored for every replica."""
    if settings.page_token_key:
        return settings.page_token_key.encode()
    with models.database.connection_context():
        return models.ServiceSetting.get_by_id(PAGE_TOKEN_SETTING).value.encode()


def create_server(settings: Settings, reuse_port: bool = False) -> tuple[grpc.Server, int]:
    """A server with every service registered and bound to ``settings.listen``; not started.

    ``reuse_port`` lets worker processes share the port; otherwise a port in use is an error
    (grpc would share it silently by default).
    """
    limits.apply(settings)
    encryption.configure(settings.encryption_keys)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.pool_size),
        interceptors=[*tracing.interceptors(), *auth.interceptors(settings)],
        options=[("grpc.so_reuseport", int(reuse_port)), *limits.grpc_options(settings)],
    )
    services = resource_services(PageTokens(page_token_key(settings)))
    services[lineage.SERVICE] = lineage.behaviors()  # Services of no single resource.
    server.add_generic_rpc_handlers([bind(service, behaviors) for service, behaviors in services.items()])

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [service.full_name for service in services]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    DatabaseWatch(health_servicer, names).start()

    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = tls.bind(server, settings)
    return server, port


def serve(settings: Settings) -> None:
    settings = auth.embedded_default(settings)  # Before the workers: they share the dev token.
    auth.authenticator(settings)  # Refuse to start with no way to authenticate anyone.
    tracing.configure()  # Before the pool's first connection, so that its SQL is traced.
    db.connect(db.database_url(settings), settings)
    db.prepare_schema(settings)
    _serve(settings)


@contextlib.contextmanager
def _embedded_kept_alive(settings: Settings) -> Iterator[None]:
    """Restart the embedded PostgreSQL whenever it dies, while this block runs."""
    keeper = EmbeddedKeeper(settings.data_dir) if settings.embedded else None
    if keeper:
        keeper.start()
    try:
        yield
    finally:
        if keeper:
            keeper.stop()  # Before exit, when pgserver stops the embedded server for good.


def _serve(settings: Settings) -> None:
    database = "embedded" if settings.embedded else "external"
    if settings.workers <= 1:
        with _embedded_kept_alive(settings):
            _serve_process(settings, lambda port: log.info("serving on %s:%d (%s database)", _host(settings), port, database))
        return
    models.database.close_all()  # Workers must not share the parent's connections.
    exporter = metrics.serve_workers(settings.metrics_listen)  # Before the fork: workers write, this serves.
    if exporter:
        log.info("metrics on http://%s/metrics", exporter[1])
    host, port = _host(settings), int(settings.listen.rsplit(":", 1)[1])
    with workers.reserved_port(host, port) as port:
        shared = dataclasses.replace(settings, listen=f"{host}:{port}")
        children = workers.start(settings.workers, lambda ready: _serve_process(shared, lambda _: ready(), True))
        log.info("serving on %s:%d (%s database, %d workers)", host, port, database, settings.workers)
        with _embedded_kept_alive(settings):  # Started after the fork: no thread crosses it.
            _wait_for_stop_signal()
        log.info("stopping %d workers", settings.workers)
        workers.stop(children, settings.grace_seconds)
    if exporter:
        exporter[0].shutdown()
    log.info("stopped")


def _host(settings: Settings) -> str:
    return settings.listen.rsplit(":", 1)[0]


def _wait_for_stop_signal() -> None:
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()


def _serve_process(
    settings: Settings, announce: Callable[[int], None] | None = None, reuse_port: bool = False
) -> None:
    """One server process: serve until SIGTERM/SIGINT, finish in-flight calls, close the pool."""
    server, port = create_server(settings, reuse_port)
    # One metrics endpoint per port: with several workers each would need its own.
    exporter = metrics.serve(settings.metrics_listen) if not reuse_port else None
    if exporter:
        log.info("metrics on http://%s/metrics", exporter[1])
    server.start()
    if announce:
        announce(port)
    _wait_for_stop_signal()
    log.info("stopping: finishing in-flight calls (grace %.0fs)", settings.grace_seconds)
    server.stop(settings.grace_seconds).wait()
    models.database.close_all()
    tracing.shutdown()
    if exporter:
        exporter[0].shutdown()
    if not reuse_port:
        log.info("stopped")
