"""The gRPC server: resource services, health checking and reflection.

    server, port = create_server(settings)   # database already connected
    server.start()

``serve`` is the whole process (what ``python -m server`` runs): it starts the
embedded PostgreSQL when no ``DATABASE_URL`` is set, checks the schema, serves,
and on SIGTERM or SIGINT stops accepting calls, lets in-flight ones finish
within the grace period and closes the connection pool.
"""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import models
from server import database as db
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


def create_server(settings: Settings) -> tuple[grpc.Server, int]:
    """A server with every service registered and bound to ``settings.listen``; not started."""
    limits.apply(settings)
    encryption.configure(settings.encryption_keys)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.pool_size),
        interceptors=[*tracing.interceptors(), *auth.interceptors(settings)],
        options=limits.grpc_options(settings),
    )
    services = resource_services(PageTokens(page_token_key(settings)))
    server.add_generic_rpc_handlers([bind(service, behaviors) for service, behaviors in services.items()])

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [service.full_name for service in services]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

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
    server, port = create_server(settings)
    exporter = metrics.serve(settings.metrics_listen)
    if exporter:
        log.info("metrics on http://%s/metrics", exporter[1])
    server.start()
    host = settings.listen.rsplit(":", 1)[0]
    log.info("serving on %s:%d (%s database)", host, port, "embedded" if settings.embedded else "external")

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    log.info("stopping: finishing in-flight calls (grace %.0fs)", settings.grace_seconds)
    server.stop(settings.grace_seconds).wait()
    models.database.close_all()
    tracing.shutdown()
    if exporter:
        exporter[0].shutdown()
    log.info("stopped")
