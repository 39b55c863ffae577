"""OpenTelemetry: off by default; with the standard variables an RPC is a server span over its SQL spans."""
from __future__ import annotations

import json
import secrets
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.ops import tracing
from tests.support import message, rpc_error
from tests.support.ops import ServerProcess, migrate, scratch_database, unreachable

METHOD = "/versatil.ml.v1.WorkflowService/{}"


def spans_in(output: str) -> list[dict]:
    """The spans the console exporter printed: JSON objects one after another."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := output.find("{", at)) >= 0:
        span, at = decoder.raw_decode(output, at)
        spans.append(span)
    return spans


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_tracing_is_off_unless_the_standard_variables_ask(env: dict[str, str], expected: list[str]) -> None:
    assert tracing.exporter_names(env) == expected


@pytest.mark.slow
def test_an_rpc_is_a_server_span_with_its_sql_as_children(database_url: str) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with scratch_database(database_url) as url:
        migrate(url)
        env = {"DATABASE_URL": url, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "versatil-test"}
        with ServerProcess(env) as server, server.channel() as channel:
            server.wait_for("tracing on: exporting spans to console as versatil-test")

            def call(method: str, request, **kwargs):
                return channel.unary_unary(METHOD.format(method), request_serializer=lambda m: m.SerializeToString())(
                    request, **kwargs
                )

            workflow = message("Workflow", name="traced", created_by="ops")
            call("CreateWorkflow", message("CreateWorkflowRequest", workflow=workflow),
                 metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")])
            rpc_error(call, "GetWorkflow", message("GetWorkflowRequest", id=str(uuid.uuid4())))
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            with unreachable(database_url, url):
                down = rpc_error(call, "GetWorkflow", message("GetWorkflowRequest", id=str(uuid.uuid4())), timeout=30)
            assert down.code() == grpc.StatusCode.UNAVAILABLE
        assert server.process.returncode == 0  # Spans still buffered are flushed on SIGTERM.

    spans = spans_in("".join(server.stdout_lines))
    create = next(s for s in spans if s["name"] == METHOD.format("CreateWorkflow"))
    assert create["kind"] == "SpanKind.SERVER"
    assert create["context"]["trace_id"] == f"0x{trace_id}"  # The caller's trace goes on.
    assert create["parent_id"] == f"0x{parent_id}"
    assert create["resource"]["attributes"]["service.name"] == "versatil-test"
    assert create["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]

    sql = [s for s in spans if s["parent_id"] == create["context"]["span_id"]]
    assert sql and all(s["kind"] == "SpanKind.CLIENT" for s in sql)
    assert all(s["context"]["trace_id"] == create["context"]["trace_id"] for s in sql)
    assert all(s["attributes"]["db.system"] == "postgresql" for s in sql)
    assert any('INSERT INTO "workflows"' in s["attributes"]["db.statement"] for s in sql)

    missing, unavailable = [s for s in spans if s["name"] == METHOD.format("GetWorkflow")]
    assert missing["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert missing["status"]["status_code"] == "UNSET"  # The caller's mistake, not the server's.
    assert unavailable["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert unavailable["status"]["status_code"] == "ERROR"
    assert not [s for s in spans if s["name"].startswith("/grpc.")]  # Probes are not traced.
