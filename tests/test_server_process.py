"""``python -m server`` as an operator runs it: start-up checks, health, reflection, shutdown.

Every server here is a child process started by the test and stopped by its pid.
"""
from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import ADMIN_TOKEN, RESOURCES, message, refused
from tests.support.ops import ServerProcess, migrate, run_module, stop_embedded, unreachable

pytestmark = pytest.mark.slow

STANDARD_METHODS = ("Create{r}", "Get{r}", "List{r}s", "Update{r}", "Delete{r}", "BatchCreate{r}s", "BatchGet{r}s")


def _stub(channel: grpc.Channel, resource: str, method: str):
    return channel.unary_unary(
        f"/versatil.ml.v1.{resource}Service/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on its own embedded PostgreSQL in a fresh data directory."""
    data_dir = tmp_path_factory.mktemp("data")
    try:
        with ServerProcess({"VERSATIL_DATA_DIR": str(data_dir), "DATABASE_URL": ""}) as server:
            yield server
    finally:
        stop_embedded(data_dir)


def test_embedded_start_applies_migrations_and_serves(embedded: ServerProcess) -> None:
    assert any("applied migration 0001_initial_schema" in line for line in embedded.stderr_lines)
    workflow = message("Workflow", name="first", created_by="ops")
    with embedded.channel() as channel:
        raw = _stub(channel, "Workflow", "CreateWorkflow")(message("CreateWorkflowRequest", workflow=workflow))
    assert message("Workflow").FromString(raw).name == "first"


def test_reflection_lists_every_service_with_its_standard_methods(embedded: ServerProcess) -> None:
    with embedded.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        def ask(**request):
            return next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))))

        listed = {s.name for s in ask(list_services="").list_services_response.service}
        expected = {f"versatil.ml.v1.{r}Service" for r in RESOURCES}
        assert expected <= listed
        assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed

        for resource in RESOURCES:
            files = ask(file_containing_symbol=f"versatil.ml.v1.{resource}Service").file_descriptor_response
            services = [
                service
                for blob in files.file_descriptor_proto
                for service in descriptor_pb2.FileDescriptorProto.FromString(blob).service
                if service.name == f"{resource}Service"
            ]
            declared = [m.name for m in services[0].method]
            assert declared[: len(STANDARD_METHODS)] == [m.format(r=resource) for m in STANDARD_METHODS]


def test_health_reports_serving(embedded: ServerProcess) -> None:
    with embedded.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", "versatil.ml.v1.DatasetService"]:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_every_call_is_logged_with_method_code_and_duration(embedded: ServerProcess) -> None:
    start = len(embedded.stderr_lines)
    with embedded.channel() as channel:
        call = _stub(channel, "Dataset", "GetDataset")
        refused(lambda: call(message("GetDatasetRequest", id="not-a-uuid")), grpc.StatusCode.INVALID_ARGUMENT)
    embedded.wait_for(r"/versatil.ml.v1.DatasetService/GetDataset INVALID_ARGUMENT \d+\.\d+ms", start=start)


def test_sigterm_finishes_in_flight_calls_then_exits(scratch_url: str) -> None:
    migrate(scratch_url)
    with ServerProcess({"DATABASE_URL": scratch_url}) as server, server.channel() as channel:
        workflows = [message("CreateWorkflowRequest", workflow=message("Workflow", name=f"w{i}", created_by="ops"))
                     for i in range(1000)]
        in_flight = _stub(channel, "Workflow", "BatchCreateWorkflows").future(
            message("BatchCreateWorkflowsRequest", requests=workflows)
        )
        time.sleep(0.3)
        signalled = len(server.stderr_lines)
        server.process.send_signal(signal.SIGTERM)
        reply = message("BatchCreateWorkflowsResponse").FromString(in_flight.result(timeout=60))
        assert len(reply.workflows) == 1000
        assert server.process.wait(timeout=30) == 0
        server.stop()  # Already exited: only waits for the last of its output.
        rest = "".join(server.stderr_lines[signalled:])
        assert "stopping: finishing in-flight calls" in rest and "stopped" in rest


def test_refuses_a_shared_database_whose_schema_is_behind(scratch_url: str) -> None:
    env = {"DATABASE_URL": scratch_url, "VERSATIL_LISTEN": "127.0.0.1:0", "VERSATIL_DEV_TOKEN": ADMIN_TOKEN}
    result = run_module("server", env)
    assert result.returncode != 0
    assert "pending migration" in result.stderr and "make migrate" in result.stderr


def test_unreachable_database_is_unavailable_and_the_service_recovers(database_url: str, scratch_url: str) -> None:
    migrate(scratch_url)
    get = message("GetWorkflowRequest", id=str(uuid.uuid4()))
    with ServerProcess({"DATABASE_URL": scratch_url}) as server, server.channel() as channel:
        call = _stub(channel, "Workflow", "GetWorkflow")
        refused(lambda: call(get), grpc.StatusCode.NOT_FOUND)
        with unreachable(database_url, scratch_url):
            refused(lambda: call(get, timeout=30), grpc.StatusCode.UNAVAILABLE, "database")
        refused(lambda: call(get, timeout=30), grpc.StatusCode.NOT_FOUND)
