"""Row-level security: a prediction is visible only to its creator, unless the caller is an admin.

PostgreSQL enforces it (migration 0005): the service runs each RPC as a role RLS
applies to, with the caller in ``versatil.principal``. The tests look through
every read path of the API, then go under it to show that the database itself
refuses, whatever the SQL.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import peewee
import psycopg2
import pytest

import models
from server.core.principal import Caller, Role, acting_as
from server.ops import database as db
from tests.support import message, refused
from tests.support.security import SecuredServer, add_token, secured_server
from versatil.ml.v1 import common_pb2

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rls")


@pytest.fixture(scope="module")
def rita_writes(directory: Path) -> str:
    """A second token of rita's, a writer's: her predictions are written with it, read with her reader token."""
    return add_token(directory / "tokens.json", "rita", "writer")


@pytest.fixture(scope="module")
def server(directory: Path, rita_writes: str, database_url: str) -> Iterator[SecuredServer]:
    roles = {"alice": "writer", "bob": "writer", "rita": "reader", "ada": "admin"}
    with secured_server(directory, roles) as running:
        yield running


@pytest.fixture(scope="module")
def made(server: SecuredServer, rita_writes: str) -> dict[str, Any]:
    """One endpoint and model version; 3 predictions by alice, 2 by bob, 1 by rita and 1 by the admin."""
    admin = server.api("ada")
    endpoint = admin.create("Endpoint")
    version = admin.create("ModelVersion")
    parents = {"endpoint_id": endpoint.id, "model_version_id": version.id}
    alice = [server.api("alice").create("Prediction", **parents, latency=10 * i, created_by="bob") for i in range(3)]
    bob = [server.api("bob").create("Prediction", **parents, latency=7) for _ in range(2)]
    rita = [server.api(token=rita_writes).create("Prediction", **parents)]
    ada = [admin.create("Prediction", **parents, latency=5, created_by="rita")]
    assert {p.created_by for p in alice} == {"alice"} and {p.created_by for p in bob} == {"bob"}
    assert rita[0].created_by == "rita" and ada[0].created_by == "ada"  # Even an admin's created_by is ignored.
    return {"endpoint": endpoint.id, "alice": alice, "bob": bob, "rita": rita, "ada": ada,
            "filter": f'endpoint_id = "{endpoint.id}"'}


def ids(predictions: list[Any]) -> set[str]:
    return {p.id for p in predictions}


def listed(server: SecuredServer, principal: str, made: dict[str, Any]) -> set[str]:
    response = server.api(principal).call("Prediction", "ListPredictions", filter=made["filter"], page_size=100,
                                          show_total_size=True)
    assert response.total_size == len(response.predictions)
    return ids(response.predictions)


def test_each_principal_lists_only_its_own_predictions(server: SecuredServer, made: dict[str, Any]) -> None:
    assert listed(server, "alice", made) == ids(made["alice"])  # Created as alice, whatever it said.
    assert listed(server, "bob", made) == ids(made["bob"])
    assert listed(server, "rita", made) == ids(made["rita"])  # Hers, not the admin's that named her.
    assert listed(server, "ada", made) == ids(made["alice"] + made["bob"] + made["rita"] + made["ada"])


def test_another_principals_prediction_does_not_exist_for_the_caller(server: SecuredServer, made: dict[str, Any]) -> None:
    alice, theirs = server.api("alice"), made["bob"][0]
    for call in (
        lambda: alice.call("Prediction", "GetPrediction", id=theirs.id),
        lambda: alice.call("Prediction", "BatchGetPredictions", ids=[made["alice"][0].id, theirs.id]),
        lambda: alice.call("Prediction", "UpdatePrediction", prediction=message("Prediction", id=theirs.id, latency=1)),
    ):
        refused(call, Code.NOT_FOUND)
    assert server.api("bob").call("Prediction", "GetPrediction", id=theirs.id).latency == 7
    assert server.api("ada").call("Prediction", "GetPrediction", id=theirs.id) == theirs


@pytest.mark.parametrize("group_by", [[], ["endpoint_id"], ["status"], ["created_by"]])
def test_stats_count_only_the_callers_predictions(server: SecuredServer, made: dict[str, Any], group_by: list[str]) -> None:
    """``[]`` and ``endpoint_id`` are requests the hourly rollup answers for an admin."""
    request = common_pb2.StatsRequest(
        filter=made["filter"], group_by=group_by,
        aggregations=[common_pb2.Aggregation(op=common_pb2.AGGREGATION_OP_COUNT),
                      common_pb2.Aggregation(op=common_pb2.AGGREGATION_OP_SUM, field="latency")])

    def totals(principal: str) -> tuple[float, float]:
        groups = server.api(principal).stub("Prediction").GetPredictionStats(request).groups
        return (sum(g.values["count"].number_value for g in groups),
                sum(g.values["sum_latency"].number_value for g in groups))

    assert totals("alice") == (3, 30)
    assert totals("bob") == (2, 14)
    assert totals("rita") == (1, 12)
    assert totals("ada") == (7, 30 + 14 + 12 + 5)


def test_a_query_with_no_filter_at_all_still_sees_only_the_callers_rows(database_url: str, made: dict[str, Any]) -> None:
    """What a bug that forgot the principal would run: the database still filters."""
    everyone = ids(made["alice"] + made["bob"] + made["rita"] + made["ada"])
    for caller, expected in ((Caller("alice", Role.WRITER), ids(made["alice"])),
                             (Caller("bob", Role.READER), ids(made["bob"])),
                             (Caller("rita", Role.READER), ids(made["rita"])),
                             (Caller("nobody", Role.WRITER), set()),
                             (Caller("ada", Role.ADMIN), everyone)):
        with acting_as(caller), models.database.connection_context():
            seen = {str(i) for (i,) in models.database.execute_sql("SELECT id FROM predictions").fetchall()}
            assert seen & everyone == expected, caller
            rollups = models.database.execute_sql("SELECT count(*) FROM prediction_hourly_rollups").fetchone()[0]
            assert (rollups > 0) == caller.admin
    with models.database.connection_context():  # Outside an RPC: the connecting role, unrestricted.
        seen = {str(i) for (i,) in models.database.execute_sql("SELECT id FROM predictions").fetchall()}
    assert everyone <= seen


def test_a_caller_cannot_write_a_prediction_for_someone_else(database_url: str, made: dict[str, Any]) -> None:
    one = made["alice"][0]
    with acting_as(Caller("alice", Role.WRITER)), models.database.connection_context():
        with pytest.raises(peewee.DatabaseError) as raised:
            with models.database.atomic():
                models.database.execute_sql("UPDATE predictions SET created_by = 'bob' WHERE id = %s", (one.id,))
        assert "row-level security" in str(raised.value)


def _session(url: str) -> Any:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    return connection


def test_the_service_roles_are_neither_superusers_nor_bypass_the_policy(database_url: str) -> None:
    connection = _session(database_url)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = %s", (db.APP_ROLE,))
        assert cursor.fetchone() == (False, False, False)
        cursor.execute("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = %s", (db.ADMIN_ROLE,))
        assert cursor.fetchone() == (False, False)
        cursor.execute("SELECT relrowsecurity FROM pg_class WHERE relname IN ('predictions', 'prediction_hourly_rollups')")
        assert cursor.fetchall() == [(True,), (True,)]
        # With no principal set at all, the service's role sees no prediction: it fails closed.
        cursor.execute(f"SET ROLE {db.APP_ROLE}")
        cursor.execute("SELECT count(*) FROM predictions")
        assert cursor.fetchone() == (0,)
    finally:
        connection.close()


def test_the_setting_follows_the_caller_on_a_reused_connection(database_url: str, made: dict[str, Any]) -> None:
    """One pooled connection serving alice, then bob, then code outside any RPC."""
    seen = []
    for caller in (Caller("alice", Role.WRITER), Caller("bob", Role.WRITER), None, Caller("alice", Role.WRITER)):
        if caller is None:
            with models.database.connection_context():
                seen.append(models.database.execute_sql("SELECT current_user, current_setting('versatil.principal', true)").fetchone())
            continue
        with acting_as(caller), models.database.connection_context():
            seen.append(models.database.execute_sql("SELECT current_user, current_setting('versatil.principal', true)").fetchone())
    superuser, unset = seen[2]
    assert seen == [(db.APP_ROLE, "alice"), (db.APP_ROLE, "bob"), (superuser, unset), (db.APP_ROLE, "alice")]
    assert superuser not in (db.APP_ROLE, db.ADMIN_ROLE) and not unset
