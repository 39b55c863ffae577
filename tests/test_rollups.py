"""The hourly rollup of predictions: exact after any writes, and answering stats as the raw rows do.

Also checks, with EXPLAIN on a database of its own holding enough rows for the planner's choice to
mean something, that the main prediction stats shapes read the covering indexes instead of
scanning the whole predictions table.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import random
from collections.abc import Iterator
from typing import Any

import grpc
import peewee
import pytest
from playhouse.migrations import Runner
from playhouse.postgres_ext import PostgresqlExtDatabase
from psycopg2.errorcodes import DEADLOCK_DETECTED, SERIALIZATION_FAILURE

import models
from server.core.limits import Limits
from server.ops.database import MIGRATIONS_DIR
from server.stats.plan import plan_of
from server.stats.query import respond, stats_query
from server.stats.rollup import rollup_source
from tests.support import RESOURCES, message
from tests.support.ops import peewee_database, scratch_database
from tests.support.stats import UTC, aggregation, bucket, groups, insert_predictions, prediction_values
from versatil.ml.v1 import common_pb2

PREDICTION = RESOURCES["Prediction"]
STATUSES = ("PENDING", "COMPLETED", "FAILED")
START = datetime.datetime(2031, 5, 2, tzinfo=UTC)

# The rollup's rows recomputed from the predictions, and the rollup's rows as stored.
RECOMPUTED = """
SELECT endpoint_id, date_trunc('hour', created_at, 'UTC'), model_version_id, status,
       count(*), sum(latency), min(latency), max(latency),
       count(confidence), coalesce(sum(confidence), 0), min(confidence), max(confidence)
  FROM predictions GROUP BY 1, 2, 3, 4
"""
STORED = """
SELECT endpoint_id, hour, model_version_id, status, row_count, latency_sum, latency_min, latency_max,
       confidence_count, confidence_sum, confidence_min, confidence_max
  FROM prediction_hourly_rollups
"""


def assert_rollup_exact() -> None:
    """The whole rollup (every test's predictions) equals its recomputation; sums of
    confidences, added up in another order, to rounding."""
    with models.database.connection_context():
        recomputed = sorted(models.database.execute_sql(RECOMPUTED).fetchall(), key=str)
        stored = sorted(models.database.execute_sql(STORED).fetchall(), key=str)
    assert [row[:9] + row[10:] for row in stored] == [row[:9] + row[10:] for row in recomputed]
    for kept, fresh in zip(stored, recomputed):
        assert kept[9] == pytest.approx(fresh[9], rel=1e-12, abs=1e-12)


@pytest.fixture
def world(api: Any) -> dict[str, Any]:
    """Two endpoints and two model versions of a fresh model."""
    model = api.create("Model")
    return {
        "model": model.id,
        "endpoints": [api.create("Endpoint", model_id=model.id).id for _ in range(2)],
        "versions": [api.create("ModelVersion", model_id=model.id).id for _ in range(2)],
    }


def random_row(rng: random.Random, world: dict[str, Any]) -> dict[str, Any]:
    return {
        "endpoint_id": rng.choice(world["endpoints"]),
        "model_version_id": rng.choice(world["versions"]),
        "latency": rng.randint(0, 50),
        "confidence": rng.choice([None, rng.randint(0, 64) / 64]),
        "status": rng.choice(STATUSES),
        "created_at": START + datetime.timedelta(seconds=rng.randint(0, 6 * 3600)),
    }


def scoped(world: dict[str, Any], extra: str = "") -> str:
    ids = ", ".join(f'"{e}"' for e in world["endpoints"])
    return f"endpoint_id IN ({ids})" + (f" AND {extra}" if extra else "")


def request_for(world: dict[str, Any], extra: str = "", **fields: Any) -> common_pb2.StatsRequest:
    return common_pb2.StatsRequest(filter=scoped(world, extra), **fields)


# Requests the rollup answers: (extra filter, request fields).
ROLLUP_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("", {"group_by": ["endpoint_id"],
          "aggregations": [aggregation("COUNT"), aggregation("AVG", "latency"), aggregation("AVG", "confidence")]}),
    ("", {"group_by": ["status", "model_version_id"], "time_bucket": bucket("created_at", "HOUR"),
          "aggregations": [aggregation("COUNT", "confidence"), aggregation("SUM", "confidence"),
                           aggregation("MIN", "confidence"), aggregation("MAX", "confidence")]}),
    ("", {"time_bucket": bucket("created_at", "DAY", "America/New_York"), "order_by": "sum_latency desc",
          "aggregations": [aggregation("SUM", "latency"), aggregation("MIN", "latency"),
                           aggregation("MAX", "latency"), aggregation("COUNT", "status")]}),
    ("", {"group_by": ["endpoint_id", "model_version_id", "status"], "limit": 5,
          "time_bucket": bucket("created_at", "WEEK", "Europe/Paris")}),
    ('status IN (COMPLETED, FAILED) AND created_at >= "2031-05-02T03:00:00Z"',
     {"time_bucket": bucket("created_at", "MONTH", "Asia/Tokyo"), "aggregations": [aggregation("AVG", "latency")]}),
    ('NOT (created_at < "2031-05-02T01:00:00Z") AND (status = PENDING OR status = FAILED)',
     {"aggregations": [aggregation("COUNT"), aggregation("AVG", "confidence")]}),
    ('created_at < "2031-05-02T04:00:00Z" AND NOT (status = FAILED)',
     {"group_by": ["status"], "aggregations": [aggregation("MAX", "latency")]}),
    ("", {"time_bucket": bucket("created_at", "HOUR", "Australia/Sydney"), "order_by": "bucket_start desc"}),
]


def both_ways(request: common_pb2.StatsRequest) -> tuple[list[Any], list[Any], bool]:
    """The groups from the rollup and from the raw rows, and whether the rollup would be used."""
    with models.database.connection_context():
        plan = plan_of(PREDICTION, request, Limits())
        rolled = respond(plan, stats_query(plan, faster=True).tuples())
        raw = respond(plan, stats_query(plan, faster=False).tuples())
        return groups(rolled), groups(raw), rollup_source(plan) is not None


def assert_same_groups(rolled: list[dict[str, Any]], raw: list[dict[str, Any]]) -> None:
    assert [(g["bucket_start"], g["keys"]) for g in rolled] == [(g["bucket_start"], g["keys"]) for g in raw]
    for one, other in zip(rolled, raw):
        approx = {k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in other["values"].items()}
        assert one["values"] == approx


def check_rollup_answers(world: dict[str, Any]) -> None:
    for extra, fields in ROLLUP_REQUESTS:
        rolled, raw, from_rollup = both_ways(request_for(world, extra, **fields))
        assert from_rollup, (extra, fields)
        assert raw, (extra, fields)
        assert_same_groups(rolled, raw)


def prediction_ids(world: dict[str, Any]) -> list[str]:
    with models.database.connection_context():
        query = models.Prediction.select(models.Prediction.id).where(models.Prediction.endpoint.in_(world["endpoints"]))
        return [str(row.id) for row in query]


def write_randomly(api: Any, world: dict[str, Any], rng: random.Random) -> None:
    """One random write: through the API (create, batch create, update, delete) or straight in SQL
    (statements touching many rows at once, moving them between hours, statuses and versions)."""
    stub = api.stub("Prediction")
    action = rng.choice(["create", "batch", "update", "update", "delete", "sql_update", "sql_delete", "sql_insert"])
    ids = prediction_ids(world)
    if action in ("update", "delete", "sql_update") and not ids:
        action = "create"

    def sample() -> Any:
        row = random_row(rng, world)
        return api.sample("Prediction", endpoint_id=row["endpoint_id"], model_version_id=row["model_version_id"],
                          latency=row["latency"], status=rng.randint(1, 3))

    if action == "create":
        stub.CreatePrediction(message("CreatePredictionRequest", prediction=sample()))
    elif action == "batch":
        requests = [message("CreatePredictionRequest", prediction=sample()) for _ in range(rng.randint(1, 8))]
        stub.BatchCreatePredictions(message("BatchCreatePredictionsRequest", requests=requests))
    elif action == "update":
        prediction = message("Prediction", id=rng.choice(ids), latency=rng.randint(0, 80), status=rng.randint(1, 3),
                             confidence=rng.randint(0, 8) / 8)
        request = message("UpdatePredictionRequest", prediction=prediction)
        request.update_mask.paths.extend(rng.sample(["latency", "status", "confidence"], rng.randint(1, 3)))
        stub.UpdatePrediction(request)
    elif action == "delete":
        stub.DeletePrediction(message("DeletePredictionRequest", id=rng.choice(ids)))
    else:
        P = models.Prediction
        mine = P.endpoint.in_(world["endpoints"])
        with models.database.connection_context(), models.database.atomic():
            if action == "sql_update":
                shift = datetime.timedelta(minutes=rng.randint(-300, 300))
                chosen = rng.sample(ids, min(20, len(ids)))
                P.update(created_at=P.created_at + shift, status=rng.choice(STATUSES),
                         model_version=rng.choice(world["versions"])).where(P.id.in_(chosen)).execute()
                P.update(confidence=None).where(mine & (P.latency == rng.randint(0, 50))).execute()
            elif action == "sql_delete":
                P.delete().where(mine & (P.latency == rng.randint(0, 50))).execute()
            else:
                P.insert_many([prediction_values(random_row(rng, world)) for _ in range(rng.randint(1, 30))]).execute()


@pytest.mark.slow
def test_rollup_stays_exact_through_random_writes(api, world):
    rng = random.Random(20310502)
    insert_predictions(world["endpoints"][0], world["versions"][0], [random_row(rng, world) for _ in range(300)])
    assert_rollup_exact()
    check_rollup_answers(world)

    for step in range(150):
        write_randomly(api, world, rng)
        if step % 25 == 0:
            assert_rollup_exact()
    assert_rollup_exact()
    check_rollup_answers(world)

    # Cascades: a model version, then an endpoint, take their predictions and their rollup rows.
    api.call("ModelVersion", "DeleteModelVersion", id=world["versions"][1])
    assert_rollup_exact()
    api.call("Endpoint", "DeleteEndpoint", id=world["endpoints"][1])
    assert_rollup_exact()
    with models.database.connection_context():
        Rollup = models.PredictionHourlyRollup
        gone = Rollup.endpoint_id.in_(world["endpoints"][1:]) | Rollup.model_version_id.in_(world["versions"][1:])
        assert not Rollup.select().where(gone).exists()


@pytest.mark.slow
def test_concurrent_writers_keep_the_rollup_exact(api, world):
    """Writers of the same groups at once: the locks make them queue, never lose a change."""

    def writer(seed: int) -> int:
        rng, failures = random.Random(seed), 0
        for _ in range(25):
            try:
                write_randomly(api, world, rng)
            except grpc.RpcError as error:
                # A deadlock or serialization failure is ABORTED (retry); rows deleted by another
                # writer meanwhile are NOT_FOUND. Neither may leave the rollup wrong.
                assert error.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND), error
                failures += 1
            except peewee.DatabaseError as error:  # The same, met by the writes made in SQL.
                assert error.orig.pgcode in (DEADLOCK_DETECTED, SERIALIZATION_FAILURE), error
                failures += 1
        return failures

    insert_predictions(world["endpoints"][0], world["versions"][0], [random_row(random.Random(1), world) for _ in range(50)])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        failures = sum(pool.map(writer, range(4)))
    assert failures < 25
    assert_rollup_exact()
    check_rollup_answers(world)


def test_rollup_is_exact_inside_the_writing_transaction(world, database_url):
    rows = [random_row(random.Random(7), world) for _ in range(20)]
    request = request_for(world, group_by=["status"], aggregations=[aggregation("COUNT"), aggregation("MAX", "latency")])
    with models.database.connection_context():
        plan = plan_of(PREDICTION, request, Limits())
        assert rollup_source(plan) is not None
        before = respond(plan, stats_query(plan).tuples())
        with models.database.atomic() as transaction:
            models.Prediction.insert_many([prediction_values(row) for row in rows]).execute()
            inside = respond(plan, stats_query(plan).tuples())
            raw = respond(plan, stats_query(plan, faster=False).tuples())
            assert groups(inside) == groups(raw) and sum(g.values["count"].number_value for g in inside.groups) == 20
            transaction.rollback()
        assert respond(plan, stats_query(plan).tuples()) == before


ELIGIBILITY = [
    # (extra filter, request fields, answered by the rollup)
    ("", {}, True),
    ("", {"group_by": ["endpoint_id", "model_version_id", "status"]}, True),
    ("", {"time_bucket": bucket("created_at", "HOUR", "America/New_York")}, True),
    ('created_at >= "2031-05-02T03:00:00+02:00"', {}, True),
    ("", {"aggregations": [aggregation("PERCENTILE", "latency", fraction=0.5)]}, False),
    ("", {"aggregations": [aggregation("COUNT_DISTINCT", "status")]}, False),
    ("", {"aggregations": [aggregation("COUNT", "created_by")]}, False),
    ("", {"group_by": ["created_by"]}, False),
    ("", {"group_by": ["endpoint.name"]}, False),
    ("", {"time_bucket": bucket("completed_at", "DAY")}, False),
    ("", {"time_bucket": bucket("created_at", "HOUR", "Asia/Kolkata")}, False),
    ('created_at >= "2031-05-02T03:30:00Z"', {}, False),
    ('created_at > "2031-05-02T03:00:00Z"', {}, False),
    ('created_at <= "2031-05-02T03:00:00Z"', {}, False),
    ("latency > 5", {}, False),
    ('endpoint.name = "x"', {}, False),
    ("status = COMPLETED OR confidence = null", {}, False),
]


@pytest.mark.parametrize(("extra", "fields", "answered"), ELIGIBILITY)
def test_what_the_rollup_answers(world, extra, fields, answered):
    with models.database.connection_context():
        plan = plan_of(PREDICTION, request_for(world, extra, **fields), Limits())
        assert (rollup_source(plan) is not None) is answered


def test_stats_rpc_reads_the_rollup_and_agrees_with_the_raw_rows(api, world):
    rng = random.Random(3)
    insert_predictions(world["endpoints"][0], world["versions"][0], [random_row(rng, world) for _ in range(100)])
    fields = {"group_by": ["endpoint_id"], "time_bucket": bucket("created_at", "DAY", "Europe/Paris"),
              "aggregations": [aggregation("COUNT"), aggregation("AVG", "latency"), aggregation("AVG", "confidence")]}
    via_rpc = groups(api.stub("Prediction").GetPredictionStats(request_for(world, **fields)))
    rolled, raw, from_rollup = both_ways(request_for(world, **fields))
    assert from_rollup and via_rpc == rolled
    assert_same_groups(rolled, raw)


# --------------------------------------------------------------------------- EXPLAIN

ENDPOINTS, DAYS, PER_ENDPOINT_DAY = 40, 60, 25  # 60,000 predictions


@pytest.fixture(scope="module")
def big(database_url: str) -> Iterator[PostgresqlExtDatabase]:
    """A database of its own, migrated, with 60,000 predictions over 40 endpoints and 60 days."""
    with scratch_database(database_url) as url:
        database = peewee_database(url)
        try:
            Runner(database, directory=str(MIGRATIONS_DIR)).up()
            database.execute_sql(BIG_DATA, (ENDPOINTS, DAYS, DAYS * PER_ENDPOINT_DAY))
            database.execute_sql("VACUUM ANALYZE predictions")
            database.execute_sql("VACUUM ANALYZE prediction_hourly_rollups")
            yield database
        finally:
            database.close()


BIG_DATA = """
INSERT INTO workflows (id, name, status, created_by, config) VALUES (gen_random_uuid(), 'w', 'DRAFT', 't', '{}');
INSERT INTO models (id, workflow_id, name, type, framework)
    SELECT gen_random_uuid(), id, 'm', 'NLP', 'JAX' FROM workflows;
INSERT INTO model_versions (id, model_id, version, storage_path, artifact_uri, size, checksum, metrics, status)
    SELECT gen_random_uuid(), id, 1, '', '', 0, '', '{}', 'REGISTERED' FROM models;
INSERT INTO endpoints (id, model_id, name, status)
    SELECT gen_random_uuid(), m.id, 'e' || n, 'READY' FROM models m, generate_series(1, %s) n;
INSERT INTO predictions (id, endpoint_id, model_version_id, input, latency, confidence, status, created_at, updated_at)
    SELECT gen_random_uuid(), e.id, v.id, '{"x": [1, 2, 3]}', (random() * 500)::int, random(),
           (ARRAY['PENDING', 'COMPLETED', 'FAILED'])[1 + (random() * 2)::int], t, t
      FROM endpoints e, model_versions v,
           LATERAL (SELECT timestamptz '2031-01-01 00:00Z' + random() * (interval '1 day' * %s) AS t
                      FROM generate_series(1, %s)) AS times;
"""


def explain(database: PostgresqlExtDatabase, fields: dict[str, Any], use_rollup: bool) -> str:
    (endpoint_id,) = database.execute_sql("SELECT id FROM endpoints ORDER BY name LIMIT 1").fetchone()
    extra = fields.pop("extra", "")
    request = common_pb2.StatsRequest(filter=f'endpoint_id = "{endpoint_id}"' + (f" AND {extra}" if extra else ""),
                                      **fields)
    with models.database.connection_context():
        plan = plan_of(PREDICTION, request, Limits())  # Checks the time zone against the main database.
    with database.bind_ctx(models.ALL_MODELS):
        sql, params = stats_query(plan, use_rollup).sql()
    return "\n".join(row[0] for row in database.execute_sql("EXPLAIN " + sql, params))


PER_ENDPOINT = {"aggregations": [aggregation("COUNT"), aggregation("AVG", "latency"), aggregation("AVG", "confidence")]}
DAILY = {"time_bucket": bucket("created_at", "DAY", "Europe/Paris"), "extra": 'created_at >= "2031-02-01T00:00:00Z"',
         "aggregations": [aggregation("COUNT"), aggregation("AVG", "latency")]}
PERCENTILES = {"group_by": ["status"], "aggregations": [aggregation("PERCENTILE", "latency", fraction=0.99)]}


@pytest.mark.slow
@pytest.mark.parametrize("fields", [PER_ENDPOINT, DAILY, PERCENTILES], ids=["per-endpoint", "daily", "percentiles"])
def test_prediction_stats_of_one_endpoint_read_the_covering_index(big, fields):
    plan = explain(big, dict(fields), use_rollup=False)
    assert "Seq Scan on predictions" not in plan, plan
    assert "Index Only Scan using predictions_endpoint_id_created_at" in plan, plan


@pytest.mark.slow
@pytest.mark.parametrize("fields", [PER_ENDPOINT, DAILY], ids=["per-endpoint", "daily"])
def test_the_rollup_is_read_by_its_key(big, fields):
    plan = explain(big, dict(fields), use_rollup=True)
    assert "predictions" not in plan.replace("prediction_hourly_rollups", ""), plan
    assert "prediction_hourly_rollups_pkey" in plan, plan
