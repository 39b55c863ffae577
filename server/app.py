"""The process: composes the layers from ``Settings`` and serves the contract.

    service = create_server(settings)   # database already connected
    service.start()
    ...
    service.stop(grace=10)

``create_server`` is where every part gets what it needs, once: the limits, the
authenticator, the encryption keys (through the catalog they seal secrets for),
the page token signer, gRPC's own options; nothing is read from a module global.
``serve`` is the whole process (what ``python -m server`` runs): it starts the
embedded PostgreSQL when no ``DATABASE_URL`` is set, checks the schema, serves,
and on SIGTERM or SIGINT stops accepting calls, lets in-flight ones finish
within the grace period and closes the connection pool.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import models
from server.config import Settings
from server.domain.catalog import build_catalog
from server.domain.secrets import KeyRing
from server.methods import idempotency
from server.ops import database as db
from server.ops import metrics, tls, tracing, workers
from server.ops.health import DatabaseWatch, EmbeddedKeeper, Poller
from server.query.page_tokens import PageTokens
from server.rpc import auth
from server.rpc.dispatch import Dispatcher, services

log = logging.getLogger("versatil")

PAGE_TOKEN_SETTING = "page_token_key"
PURGE_EVERY = datetime.timedelta(hours=1)


def page_token_key(settings: Settings) -> bytes:
    """The configured key, or the one the first migration stored for every replica."""
    if settings.page_token_key:
        return settings.page_token_key.encode()
    with models.database.connection_context():
        return models.ServiceSetting.get_by_id(PAGE_TOKEN_SETTING).value.encode()


class RequestIdPurger(Poller):
    """Forgets request ids older than the retention, checking as often as the retention allows."""

    def __init__(self, retention: datetime.timedelta) -> None:
        super().__init__(min(PURGE_EVERY, retention).total_seconds())
        self.retention = retention

    def poll(self) -> None:
        with models.database.connection_context():
            purged = idempotency.purge(self.retention)
        if purged:
            log.info("forgot %d request id(s) older than %s", purged, self.retention)


@dataclass
class Service:
    """A gRPC server with every service registered, and the pollers that run beside it."""

    server: grpc.Server
    port: int
    pollers: list[Poller] = field(default_factory=list)

    def start(self) -> None:
        self.server.start()
        for poller in self.pollers:
            poller.start()

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish within ``grace`` seconds, stop the pollers."""
        self.server.stop(grace).wait()
        for poller in self.pollers:
            poller.stop()


def create_server(settings: Settings, reuse_port: bool = False) -> Service:
    """Every service registered and bound to ``settings.listen``; not started.

    ``reuse_port`` lets worker processes share the port; otherwise a port in use is an error
    (grpc would share it silently by default).
    """
    authenticator = auth.authenticator(settings)
    if authenticator is None:
        log.warning("authentication is off (VERSATIL_AUTH=off): every caller may do everything")
    catalog = build_catalog(KeyRing.from_texts(settings.encryption_keys))
    contract = services(catalog, settings.limits, PageTokens(page_token_key(settings)))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.pool_size),
        interceptors=tracing.interceptors(),
        options=[
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
        ],
    )
    dispatcher = Dispatcher(authenticator)
    server.add_generic_rpc_handlers([dispatcher.bind(service, methods) for service, methods in contract.items()])

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [service.full_name for service in contract]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = tls.bind(server, settings)
    return Service(server, port, [DatabaseWatch(health_servicer, names), RequestIdPurger(settings.request_id_retention)])


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
    service = create_server(settings, reuse_port)
    # One metrics endpoint per port: with several workers each would need its own.
    exporter = metrics.serve(settings.metrics_listen) if not reuse_port else None
    if exporter:
        log.info("metrics on http://%s/metrics", exporter[1])
    service.start()
    if announce:
        announce(service.port)
    _wait_for_stop_signal()
    log.info("stopping: finishing in-flight calls (grace %.0fs)", settings.grace_seconds)
    service.stop(settings.grace_seconds)
    models.database.close_all()
    tracing.shutdown()
    if exporter:
        exporter[0].shutdown()
    if not reuse_port:
        log.info("stopped")
