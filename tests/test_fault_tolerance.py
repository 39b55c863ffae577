"""The service survives its database going away, bounds SQL by deadlines and retries conflicts."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import peewee
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from models import database
from server.core.errors import to_rpc_status, translate
from server.rpc import calls
from tests.support import Api, message, refused, rpc_error
from tests.support.ops import ServerProcess, migrate, postmaster_pid, stop_embedded, unreachable

BATCH = 20


def _eventually(check: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


class _NoDeadline:
    """The part of a gRPC servicer context ``calls.run`` reads, for a call without a deadline."""

    def time_remaining(self) -> None:
        return None


def _raise_serialization_failure() -> None:
    database.execute_sql("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")


def test_conflicts_are_retried_a_bounded_number_of_times(database_url: str) -> None:
    attempts = []

    def conflicts_twice(request: str) -> str:
        attempts.append(request)
        if len(attempts) < 3:
            _raise_serialization_failure()
        return "done"

    assert calls.run(conflicts_twice, "r", _NoDeadline()) == "done"
    assert len(attempts) == 3

    attempts.clear()

    def always_conflicts(request: str) -> str:
        attempts.append(request)
        _raise_serialization_failure()
        return "never"

    with pytest.raises(peewee.DatabaseError) as raised:
        calls.run(always_conflicts, "r", _NoDeadline())
    assert len(attempts) == calls.MAX_ATTEMPTS
    assert to_rpc_status(translate(raised.value)).code == grpc.StatusCode.ABORTED.value[0]


def test_other_errors_are_not_retried(database_url: str) -> None:
    attempts = []

    def divides_by_zero(request: str) -> None:
        attempts.append(request)
        database.execute_sql("SELECT 1 / 0")

    with pytest.raises(peewee.DatabaseError):
        calls.run(divides_by_zero, "r", _NoDeadline())
    assert len(attempts) == 1


def test_a_passed_deadline_cancels_the_sql(api: Api, database_url: str) -> None:
    workflow = api.create("Workflow", description="before")
    locker = psycopg2.connect(database_url)
    try:
        locker.cursor().execute("SELECT 1 FROM workflows WHERE id = %s FOR UPDATE", (workflow.id,))
        update = message("UpdateWorkflowRequest", workflow=message("Workflow", id=workflow.id, description="after"),
                         update_mask={"paths": ["description"]})
        expired = rpc_error(api.stub("Workflow").UpdateWorkflow, update, timeout=0.5)
        assert expired.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        def nothing_waits_on_the_lock() -> bool:
            with locker.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                               "AND datname = current_database() AND pid <> pg_backend_pid()")
                return cursor.fetchone()[0] == 0

        assert _eventually(nothing_waits_on_the_lock, 5), "the UPDATE still waits after the deadline"
    finally:
        locker.rollback()
        locker.close()
    assert api.call("Workflow", "GetWorkflow", id=workflow.id).description == "before"


@pytest.mark.slow
def test_health_follows_the_database(database_url: str, scratch_url: str) -> None:
    migrate(scratch_url)
    with ServerProcess({"DATABASE_URL": scratch_url, "VERSATIL_WORKERS": "1"}) as server, server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status() -> int:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=5).status

        assert status() == health_pb2.HealthCheckResponse.SERVING
        with unreachable(database_url, scratch_url):
            assert _eventually(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING)
            refused(lambda: Api(channel).call("Workflow", "GetWorkflow", id=str(uuid.uuid4())),
                    grpc.StatusCode.UNAVAILABLE)
        assert _eventually(lambda: status() == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.slow
def test_acknowledged_writes_survive_killing_the_embedded_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    pgdata = data_dir / "pg"
    env = {"VERSATIL_DATA_DIR": str(data_dir), "DATABASE_URL": "", "VERSATIL_WORKERS": "1"}
    acknowledged: list[int] = []
    failed: list[int] = []
    try:
        with ServerProcess(env) as server, server.channel() as channel:
            api = Api(channel)
            first = api.create("Prediction")
            batches = api.stub("Prediction")
            stop = threading.Event()

            def write_load() -> None:
                for batch in range(10_000):
                    if stop.is_set():
                        return
                    requests = [
                        message("CreatePredictionRequest", prediction=message(
                            "Prediction", endpoint_id=first.endpoint_id, model_version_id=first.model_version_id,
                            input={"batch": batch, "item": item}, latency=item))
                        for item in range(BATCH)
                    ]
                    try:
                        batches.BatchCreatePredictions(message("BatchCreatePredictionsRequest", requests=requests),
                                                       timeout=5)
                        acknowledged.append(batch)
                    except grpc.RpcError:
                        failed.append(batch)
                        time.sleep(0.05)

            writer = threading.Thread(target=write_load)
            writer.start()
            try:
                assert _eventually(lambda: len(acknowledged) >= 20, 30)
                killed = postmaster_pid(data_dir)
                os.kill(killed, signal.SIGKILL)
                before = len(acknowledged)
                assert _eventually(lambda: len(acknowledged) >= before + 20, 60), "writes did not resume"
            finally:
                stop.set()
                writer.join(30)
            assert postmaster_pid(data_dir) != killed, "the embedded PostgreSQL was not restarted"
            url = f"postgresql://postgres@/versatil?host={pgdata.resolve()}"
            with psycopg2.connect(url) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT (input->>'batch')::float::int, count(*) FROM predictions "
                               "WHERE input ? 'batch' GROUP BY 1")
                stored = dict(cursor.fetchall())
            connection.close()
    finally:
        stop_embedded(data_dir)
    assert failed, "the kill happened between two writes; nothing was in flight"
    assert all(stored.get(batch) == BATCH for batch in acknowledged), "an acknowledged batch was lost"
    assert all(stored.get(batch, 0) in (0, BATCH) for batch in failed), "a failed batch was half written"

