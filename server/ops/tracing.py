"""OpenTelemetry tracing of RPCs and their SQL: off unless the standard variables ask for it.

    tracing.configure()                               # before the first database connection
    grpc.server(executor, interceptors=tracing.interceptors())
    ...
    tracing.shutdown()                                # flushes the spans still buffered

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``,
``console``, or any installed ``opentelemetry_traces_exporter`` entry point), or
when only ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set,
which means ``otlp``. ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``
keep it off. The SDK reads the other standard variables itself:
``OTEL_SERVICE_NAME`` (default here ``versatil``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*``.

Each RPC is a server span (continuing the caller's trace from its
``traceparent`` metadata) and each SQL statement a client span under it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import grpc

DEFAULT_SERVICE_NAME = "versatil"
# Server-span codes that OpenTelemetry's gRPC conventions count as errors; the
# others (NOT_FOUND, INVALID_ARGUMENT…) are the caller's business.
ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

log = logging.getLogger(__name__)
_provider: Any = None  # The SDK's TracerProvider while tracing is on.


def exporter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """The span exporters the environment asks for; empty when tracing is off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    return [name for name in names if name != "none"]


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        name = "otlp_proto_http" if protocol.startswith("http") else "otlp_proto_grpc"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r} is installed")
    return next(iter(found)).load()()


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on if the environment asks for it; True if it is on.

    Instruments psycopg2 globally, so it must run before the pool opens its
    first connection for that connection's SQL to be traced.
    """
    global _provider
    env = os.environ if env is None else env
    names = exporter_names(env)
    if not names or _provider is not None:
        return _provider is not None

    # Imported only when tracing is on: the SDK costs nothing to a service without it.
    from opentelemetry import trace
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)
    Psycopg2Instrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _provider = provider
    log.info("tracing on: exporting spans to %s as %s", ", ".join(names), resource.attributes[SERVICE_NAME])
    return True


def interceptors() -> list[grpc.ServerInterceptor]:
    """The server interceptor that opens a span per contract RPC, when tracing is on."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import filters, server_interceptor

    # Probes and reflection would bury the RPCs: only the contract is traced.
    contract = filters.negate(filters.service_prefix("grpc."))
    return [server_interceptor(tracer_provider=_provider, filter_=contract)]


def record(code: grpc.StatusCode) -> None:
    """Put the RPC's status on its span (the interceptor only sees plain aborts)."""
    if _provider is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))


def shutdown() -> None:
    """Export the spans still buffered and stop exporting."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None
