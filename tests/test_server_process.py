"""``python -m server`` as an operator runs it: start-up checks, health, reflection, shutdown.

Every server here is a child process started by the test and stopped by its pid.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg2
import psycopg2.extensions
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import RESOURCES
from tests.conftest import ADMIN_TOKEN, authorized, message

ROOT = Path(__file__).resolve().parent.parent
STANDARD_METHODS = ("Create{r}", "Get{r}", "List{r}s", "Update{r}", "Delete{r}", "BatchCreate{r}s", "BatchGet{r}s")


def _admin(url: str, *statements: str) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        for sql in statements:
            connection.cursor().execute(sql)
    finally:
        connection.close()


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """The URL of an empty database beside the session's, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    _admin(database_url, f'CREATE DATABASE "{name}"')
    params = psycopg2.extensions.parse_dsn(database_url)
    yield f"postgresql://{params['user']}@/{name}?host={params['host']}"
    _admin(database_url, f'DROP DATABASE "{name}" WITH (FORCE)')


def _run_server(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env={**os.environ, "VERSATIL_LISTEN": "127.0.0.1:0", "VERSATIL_DEV_TOKEN": ADMIN_TOKEN, **env},
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_port(process: subprocess.Popen[str], log: list[str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        log.append(line)
        found = re.search(r"serving on [\d.]+:(\d+)", line)
        if found:
            return int(found[1])
    raise AssertionError("server did not start:\n" + "".join(log))


@contextmanager
def served(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], grpc.Channel, list[str]]]:
    process = _run_server(env)
    log: list[str] = []
    try:
        port = _wait_for_port(process, log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield process, authorized(channel), log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # The graceful path stops the worker processes too.
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=30)
        process.stderr.close()


def _stub(channel: grpc.Channel, resource: str, method: str):
    return channel.unary_unary(
        f"/versatil.ml.v1.{resource}Service/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], grpc.Channel, list[str]]]:
    """A server on its own embedded PostgreSQL in a fresh data directory."""
    data_dir = tmp_path_factory.mktemp("data")
    env = {"VERSATIL_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    try:
        with served({**env, "DATABASE_URL": ""}) as running:
            yield running
    finally:
        _stop_embedded_postgres(data_dir / "pg")


def _stop_embedded_postgres(pgdata: Path) -> None:
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_embedded_start_applies_migrations_and_serves(embedded) -> None:
    _, channel, log = embedded
    assert any("applied migration 0001_initial_schema" in line for line in log)
    workflow = message("Workflow", name="first", created_by="ops")
    raw = _stub(channel, "Workflow", "CreateWorkflow")(message("CreateWorkflowRequest", workflow=workflow))
    assert message("Workflow").FromString(raw).name == "first"


def test_reflection_lists_every_service_with_its_standard_methods(embedded) -> None:
    _, channel, _ = embedded
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**request):
        return next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))))

    listed = {s.name for s in ask(list_services="").list_services_response.service}
    expected = {f"versatil.ml.v1.{r}Service" for r in RESOURCES}
    assert expected <= listed
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed

    from google.protobuf import descriptor_pb2

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


def test_health_reports_serving(embedded) -> None:
    _, channel, _ = embedded
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "versatil.ml.v1.DatasetService"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_every_call_is_logged_with_method_code_and_duration(embedded) -> None:
    process, channel, _ = embedded
    with pytest.raises(grpc.RpcError):
        _stub(channel, "Dataset", "GetDataset")(message("GetDatasetRequest", id="not-a-uuid"))
    pattern = re.compile(r"/versatil.ml.v1.DatasetService/GetDataset INVALID_ARGUMENT \d+\.\d+ms")
    seen = [process.stderr.readline() for _ in range(1)]
    while not pattern.search(seen[-1]) and len(seen) < 50:
        seen.append(process.stderr.readline())
    assert pattern.search(seen[-1]), "".join(seen)



def test_sigterm_finishes_in_flight_calls_then_exits(scratch_url: str) -> None:
    subprocess.run([sys.executable, "-m", "server.migrate", "up"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": scratch_url}, capture_output=True)
    with served({"DATABASE_URL": scratch_url}) as (process, channel, log):
        workflows = [message("CreateWorkflowRequest", workflow=message("Workflow", name=f"w{i}", created_by="ops"))
                     for i in range(1000)]
        in_flight = _stub(channel, "Workflow", "BatchCreateWorkflows").future(
            message("BatchCreateWorkflowsRequest", requests=workflows)
        )
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        reply = message("BatchCreateWorkflowsResponse").FromString(in_flight.result(timeout=60))
        assert len(reply.workflows) == 1000
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert "stopping: finishing in-flight calls" in rest and "stopped" in rest


def test_refuses_a_shared_database_whose_schema_is_behind(scratch_url: str) -> None:
    process = _run_server({"DATABASE_URL": scratch_url})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "pending migration" in stderr and "make migrate" in stderr


def test_unreachable_database_is_unavailable_and_the_service_recovers(database_url: str, scratch_url: str) -> None:
    subprocess.run([sys.executable, "-m", "server.migrate", "up"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": scratch_url}, capture_output=True)
    name = psycopg2.extensions.parse_dsn(scratch_url)["dbname"]
    get = message("GetWorkflowRequest", id=str(uuid.uuid4()))
    with served({"DATABASE_URL": scratch_url}) as (_, channel, _):
        call = _stub(channel, "Workflow", "GetWorkflow")
        with pytest.raises(grpc.RpcError) as missing:
            call(get)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        _admin(
            database_url,
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        with pytest.raises(grpc.RpcError) as down:
            call(get, timeout=30)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in down.value.details()

        _admin(database_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        with pytest.raises(grpc.RpcError) as back:
            call(get, timeout=30)
        assert back.value.code() == grpc.StatusCode.NOT_FOUND
