"""Get<R>Stats as API.md's Stats section says, through a real channel.

Most cases read the predictions of one endpoint created here, with timestamps chosen so that the
expected groups can be worked out by hand (see ``fleet``); the resource-wide cases use fresh rows
named by their ids.
"""
from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import grpc
import pytest

import models
from server.core.errors import InvalidArgument
from server.core.limits import Limits
from server.core.resource import Catalog, StatsFields
from server.stats.plan import plan_of
from tests.support import RESOURCES, bad_request_fields, refused
from tests.support.stats import aggregation, at, bucket, groups, insert_predictions, stats
from versatil.ml.v1 import common_pb2

# Endpoint A's predictions: (created_at UTC, latency, confidence, status, created_by). Jan 6 and 13
# 2030 are Sundays, Jan 7 a Monday.
A_ROWS = [
    ("2030-01-06 23:30", 10, 0.9, "COMPLETED", "alice"),
    ("2030-01-07 00:30", 20, 0.5, "COMPLETED", "alice"),
    ("2030-01-07 10:00", 30, None, "FAILED", None),
    ("2030-01-13 12:00", 40, 0.7, "COMPLETED", "bob"),
    ("2030-02-01 05:00", 100, 0.1, "PENDING", None),
]
# Endpoint B's, all on the second model version.
B_ROWS = [
    ("2030-01-07 01:00", 5, 0.3, "COMPLETED", None),
    ("2030-01-08 01:00", 7, None, "FAILED", None),
]


@pytest.fixture(scope="module")
def fleet(api: Any) -> dict[str, str]:
    """A model with two endpoints and two versions, and the predictions above."""
    model = api.create("Model", framework=2)
    a = api.create("Endpoint", model_id=model.id, name="endpoint-a")
    b = api.create("Endpoint", model_id=model.id, name="endpoint-b")
    v1 = api.create("ModelVersion", model_id=model.id)
    v2 = api.create("ModelVersion", model_id=model.id)

    def rows(spec: list[tuple[Any, ...]], **extra: Any) -> list[dict[str, Any]]:
        keys = ("created_at", "latency", "confidence", "status", "created_by")
        return [{**dict(zip(keys, row)), "created_at": at(row[0]), **extra} for row in spec]

    insert_predictions(a.id, v1.id, rows(A_ROWS[:4]))
    insert_predictions(a.id, v2.id, rows(A_ROWS[4:]))
    insert_predictions(b.id, v2.id, rows(B_ROWS))
    return {"model": model.id, "a": a.id, "b": b.id, "v1": v1.id, "v2": v2.id}


def of_a(api: Any, fleet: dict[str, str], extra_filter: str = "", **fields: Any) -> list[dict[str, Any]]:
    """Groups of endpoint A's predictions."""
    condition = f'endpoint_id = "{fleet["a"]}"' + (f" AND {extra_filter}" if extra_filter else "")
    return groups(stats(api, "Prediction", filter=condition, **fields))


def values(api: Any, fleet: dict[str, str], *aggregations: common_pb2.Aggregation) -> dict[str, Any]:
    (group,) = of_a(api, fleet, aggregations=aggregations)
    return group["values"]


def invalid(api: Any, resource: str, **fields: Any) -> tuple[str, list[str]]:
    """The message and BadRequest fields of the INVALID_ARGUMENT the request gets."""
    error = refused(lambda: stats(api, resource, **fields), grpc.StatusCode.INVALID_ARGUMENT)
    return error.details(), bad_request_fields(error)


# --------------------------------------------------------------------------- operations


def test_every_operation_with_default_aliases(api, fleet):
    got = values(
        api,
        fleet,
        aggregation("COUNT"),
        aggregation("COUNT", "confidence"),
        aggregation("COUNT_DISTINCT", "status"),
        aggregation("SUM", "latency"),
        aggregation("AVG", "latency"),
        aggregation("MIN", "latency"),
        aggregation("MAX", "latency"),
        aggregation("AVG", "confidence"),
        aggregation("PERCENTILE", "latency", fraction=0.5),
        aggregation("PERCENTILE", "latency", fraction=0.95),
        aggregation("PERCENTILE", "latency", fraction=0.999),
    )
    assert got == {
        "count": 5,
        "count_confidence": 4,
        "count_distinct_status": 3,
        "sum_latency": 200,
        "avg_latency": 40,
        "min_latency": 10,
        "max_latency": 100,
        "avg_confidence": pytest.approx(0.55),
        "p50_latency": 30,
        # percentile_cont interpolates: rank 0.95 * 4 = 3.8 lies between 40 and 100.
        "p95_latency": pytest.approx(88),
        "p99_9_latency": pytest.approx(99.76),
    }


def test_percentile_ends_are_min_and_max(api, fleet):
    got = values(
        api,
        fleet,
        aggregation("PERCENTILE", "latency", fraction=0),
        aggregation("PERCENTILE", "latency", fraction=1),
        aggregation("PERCENTILE", "confidence", fraction=0.25, alias="q1"),
    )
    # Confidences 0.1, 0.5, 0.7, 0.9 (NULL left out): rank 0.75 lies between 0.1 and 0.5.
    assert got == {"p0_latency": 10, "p100_latency": 100, "q1": pytest.approx(0.4)}


def test_min_and_max_of_a_timestamp_are_rfc3339_strings(api, fleet):
    got = values(api, fleet, aggregation("MIN", "created_at"), aggregation("MAX", "created_at"),
                 aggregation("COUNT_DISTINCT", "created_by"))
    assert got == {
        "min_created_at": "2030-01-06T23:30:00Z",
        "max_created_at": "2030-02-01T05:00:00Z",
        "count_distinct_created_by": 2,
    }


def test_no_aggregations_count_rows(api, fleet):
    assert of_a(api, fleet) == [{"bucket_start": None, "keys": {}, "values": {"count": 5}}]


def test_custom_aliases(api, fleet):
    got = values(api, fleet, aggregation("AVG", "latency", alias="mean"), aggregation("COUNT", alias="n"))
    assert got == {"mean": 40, "n": 5}


def test_an_aggregate_over_no_values_is_null(api, fleet):
    (group,) = of_a(api, fleet, "status = FAILED", aggregations=[
        aggregation("AVG", "confidence"), aggregation("COUNT", "confidence"), aggregation("SUM", "confidence"),
        aggregation("PERCENTILE", "confidence", fraction=0.5), aggregation("MIN", "confidence"),
    ])
    assert group["values"] == {
        "avg_confidence": None, "count_confidence": 0, "sum_confidence": None,
        "p50_confidence": None, "min_confidence": None,
    }


def test_one_group_over_zero_rows(api, fleet):
    got = of_a(api, fleet, "latency > 1000", aggregations=[aggregation("COUNT"), aggregation("AVG", "latency"),
                                                           aggregation("MAX", "created_at")])
    assert got == [{"bucket_start": None, "keys": {}, "values": {"count": 0, "avg_latency": None,
                                                                  "max_created_at": None}}]


def test_no_groups_over_zero_rows_when_grouped_or_bucketed(api, fleet):
    assert of_a(api, fleet, "latency > 1000", group_by=["status"]) == []
    assert of_a(api, fleet, "latency > 1000", time_bucket=bucket("created_at", "DAY")) == []


def test_whole_table_without_filter(api, fleet):
    (group,) = groups(stats(api, "Prediction"))
    assert group["values"]["count"] >= len(A_ROWS) + len(B_ROWS)


# --------------------------------------------------------------------------- groups


def test_group_by_enum(api, fleet):
    got = of_a(api, fleet, group_by=["status"], aggregations=[aggregation("COUNT"), aggregation("AVG", "latency")])
    assert [(g["keys"], g["values"]) for g in got] == [
        ({"status": "COMPLETED"}, {"count": 3, "avg_latency": pytest.approx(70 / 3)}),
        ({"status": "FAILED"}, {"count": 1, "avg_latency": 30}),
        ({"status": "PENDING"}, {"count": 1, "avg_latency": 100}),
    ]


def test_null_keys_form_their_own_group(api, fleet):
    got = of_a(api, fleet, group_by=["created_by"])
    # NULLs sort last ascending, as PostgreSQL sorts them.
    assert [(g["keys"]["created_by"], g["values"]["count"]) for g in got] == [("alice", 2), ("bob", 1), (None, 2)]


def test_group_by_ids_and_several_keys(api, fleet):
    got = groups(stats(api, "Prediction", filter=f'model_version.model_id = "{fleet["model"]}"',
                       group_by=["endpoint_id", "model_version_id"]))
    counts = {(g["keys"]["endpoint_id"], g["keys"]["model_version_id"]): g["values"]["count"] for g in got}
    assert counts == {(fleet["a"], fleet["v1"]): 4, (fleet["a"], fleet["v2"]): 1, (fleet["b"], fleet["v2"]): 2}


def test_group_by_a_timestamp_gives_rfc3339_keys(api, fleet):
    got = of_a(api, fleet, "status = PENDING", group_by=["created_at"])
    assert [g["keys"] for g in got] == [{"created_at": "2030-02-01T05:00:00Z"}]


def test_group_by_a_parent_field(api, fleet):
    got = groups(stats(api, "Prediction", filter=f'model_version.model_id = "{fleet["model"]}"',
                       group_by=["endpoint.name"], aggregations=[aggregation("MAX", "latency")]))
    assert [(g["keys"], g["values"]) for g in got] == [
        ({"endpoint.name": "endpoint-a"}, {"max_latency": 100}),
        ({"endpoint.name": "endpoint-b"}, {"max_latency": 7}),
    ]


def test_average_training_duration_per_framework(api):
    workflow = api.create("Workflow")
    pytorch = api.create("Model", workflow_id=workflow.id, framework=2)  # PYTORCH
    jax = api.create("Model", workflow_id=workflow.id, framework=5)  # JAX
    for model, duration in ((pytorch, 100), (pytorch, 300), (jax, 50), (jax, None)):
        extra = {} if duration is None else {"training_duration": duration}
        api.create("ModelVersion", model_id=model.id, **extra)
    got = groups(stats(api, "ModelVersion", filter=f'model.workflow_id = "{workflow.id}"', group_by=["model.framework"],
                       aggregations=[aggregation("AVG", "training_duration"), aggregation("COUNT")],
                       order_by="avg_training_duration desc"))
    assert [(g["keys"], g["values"]) for g in got] == [
        ({"model.framework": "PYTORCH"}, {"avg_training_duration": 200, "count": 2}),
        ({"model.framework": "JAX"}, {"avg_training_duration": 50, "count": 2}),
    ]
    # A nullable parent (training_job_id is NULL here) gives a NULL key, not a lost row.
    (group,) = groups(stats(api, "ModelVersion", filter=f'model.workflow_id = "{workflow.id}"',
                            group_by=["training_job.status"]))
    assert group["keys"] == {"training_job.status": None} and group["values"] == {"count": 4}


# --------------------------------------------------------------------------- time buckets


def bucketed(api: Any, fleet: dict[str, str], interval: str, zone: str = "") -> list[tuple[str, Any]]:
    got = of_a(api, fleet, time_bucket=bucket("created_at", interval, zone))
    return [(g["bucket_start"], g["values"]["count"]) for g in got]


def test_day_buckets_in_utc(api, fleet):
    assert bucketed(api, fleet, "DAY") == [
        ("2030-01-06T00:00:00Z", 1), ("2030-01-07T00:00:00Z", 2),
        ("2030-01-13T00:00:00Z", 1), ("2030-02-01T00:00:00Z", 1),
    ]


def test_day_buckets_follow_the_time_zone(api, fleet):
    # New York is UTC-5 in January: the two first predictions fall on its January 6.
    assert bucketed(api, fleet, "DAY", "America/New_York") == [
        ("2030-01-06T05:00:00Z", 2), ("2030-01-07T05:00:00Z", 1),
        ("2030-01-13T05:00:00Z", 1), ("2030-02-01T05:00:00Z", 1),
    ]


def test_weeks_start_on_monday(api, fleet):
    # Sunday January 6 belongs to the week of Monday December 31; Sunday the 13th to the 7th's.
    assert bucketed(api, fleet, "WEEK") == [
        ("2029-12-31T00:00:00Z", 1), ("2030-01-07T00:00:00Z", 3), ("2030-01-28T00:00:00Z", 1),
    ]


def test_month_buckets_in_a_time_zone_ahead_of_utc(api, fleet):
    # In Tokyo (UTC+9) January starts at 15:00 UTC on December 31.
    assert bucketed(api, fleet, "MONTH", "Asia/Tokyo") == [
        ("2029-12-31T15:00:00Z", 4), ("2030-01-31T15:00:00Z", 1),
    ]


def test_hour_buckets_in_a_half_hour_time_zone(api, fleet):
    # Kolkata is UTC+5:30: its hours start at half past, UTC.
    assert bucketed(api, fleet, "HOUR", "Asia/Kolkata") == [
        ("2030-01-06T23:30:00Z", 1), ("2030-01-07T00:30:00Z", 1), ("2030-01-07T09:30:00Z", 1),
        ("2030-01-13T11:30:00Z", 1), ("2030-02-01T04:30:00Z", 1),
    ]


def test_bucket_and_keys_together(api, fleet):
    got = of_a(api, fleet, "created_at < \"2030-01-08T00:00:00Z\"", group_by=["status"],
               time_bucket=bucket("created_at", "DAY", "UTC"), aggregations=[aggregation("SUM", "latency")])
    assert [(g["bucket_start"], g["keys"]["status"], g["values"]["sum_latency"]) for g in got] == [
        ("2030-01-06T00:00:00Z", "COMPLETED", 10),
        ("2030-01-07T00:00:00Z", "COMPLETED", 20),
        ("2030-01-07T00:00:00Z", "FAILED", 30),
    ]


def test_rows_without_the_bucket_timestamp_group_without_bucket_start(api):
    job = api.create("TrainingJob")
    got = groups(stats(api, "TrainingJob", filter=f'id = "{job.id}"', time_bucket=bucket("end_time", "DAY")))
    assert got == [{"bucket_start": None, "keys": {}, "values": {"count": 1}}]


# --------------------------------------------------------------------------- order and limit


def test_order_by_alias_desc_then_default_order(api, fleet):
    got = of_a(api, fleet, group_by=["status"], order_by="count desc")
    # Ties keep the default order: the keys, ascending.
    assert [g["keys"]["status"] for g in got] == ["COMPLETED", "FAILED", "PENDING"]


def test_order_by_key_desc_and_limit(api, fleet):
    got = of_a(api, fleet, group_by=["status"], order_by="status desc", limit=2)
    assert [g["keys"]["status"] for g in got] == ["PENDING", "FAILED"]


def test_order_by_bucket_start_desc(api, fleet):
    got = of_a(api, fleet, time_bucket=bucket("created_at", "WEEK"), order_by="bucket_start desc", limit=1)
    assert [g["bucket_start"] for g in got] == ["2030-01-28T00:00:00Z"]


def test_order_by_an_aggregate_with_nulls(api, fleet):
    got = of_a(api, fleet, group_by=["status"], aggregations=[aggregation("AVG", "confidence", alias="c")],
               order_by="c desc")
    # NULLs come first in descending order, as PostgreSQL sorts them.
    assert [(g["keys"]["status"], g["values"]["c"]) for g in got] == [
        ("FAILED", None), ("COMPLETED", pytest.approx(0.7)), ("PENDING", pytest.approx(0.1)),
    ]


@pytest.mark.parametrize(("requested", "applied"), [(0, 1000), (5, 5), (10000, 10000), (10001, 10000), (2**31 - 1, 10000)])
def test_limit_default_and_clamp(requested, applied, database_url):
    with models.database.connection_context():
        plan = plan_of(RESOURCES["Prediction"], common_pb2.StatsRequest(limit=requested), Limits())
    assert plan.limit == applied


# --------------------------------------------------------------------------- every resource


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_every_resource_serves_its_stats(api, resource):
    created = api.create(resource)
    got = groups(stats(api, resource, filter=f'id = "{created.id}"',
                       aggregations=[aggregation("COUNT"), aggregation("MIN", "created_at"),
                                     aggregation("COUNT_DISTINCT", "id")],
                       time_bucket=bucket("updated_at", "MONTH", "Europe/Paris")))
    assert len(got) == 1 and got[0]["values"]["count"] == 1 and got[0]["values"]["count_distinct_id"] == 1
    assert got[0]["values"]["min_created_at"] == created.created_at.ToJsonString()
    missing = groups(stats(api, resource, filter=f'id = "{uuid.uuid4()}"'))
    assert missing == [{"bucket_start": None, "keys": {}, "values": {"count": 0}}]


def test_a_declaration_narrows_what_may_be_grouped_and_aggregated(database_url):
    declared = StatsFields(group_by=frozenset({"status"}), aggregate={"latency": frozenset({"AVG"})})
    catalog = Catalog(
        [dataclasses.replace(r, stats=declared) if r.name == "Prediction" else dataclasses.replace(r) for r in RESOURCES.values()]
    )
    narrow = catalog["Prediction"]
    with models.database.connection_context():
        plan_of(narrow, common_pb2.StatsRequest(group_by=["status"], aggregations=[aggregation("AVG", "latency")]), Limits())
        with pytest.raises(InvalidArgument, match="cannot be grouped by endpoint_id"):
            plan_of(narrow, common_pb2.StatsRequest(group_by=["endpoint_id"]), Limits())
        with pytest.raises(InvalidArgument, match="SUM does not fit latency"):
            plan_of(narrow, common_pb2.StatsRequest(aggregations=[aggregation("SUM", "latency")]), Limits())


# --------------------------------------------------------------------------- invalid requests

INVALID = [
    # (resource, request fields, the BadRequest field, words of the message)
    ("Prediction", {"group_by": ["nope"]}, "group_by[0]", 'unknown field "nope" on Prediction'),
    ("Prediction", {"group_by": ["input"]}, "group_by[0]", "cannot be grouped by input"),
    ("Prediction", {"group_by": ["embedding"]}, "group_by[0]", "cannot be grouped by embedding"),
    ("Prediction", {"group_by": ["confidence"]}, "group_by[0]", "cannot be grouped by confidence"),
    ("Prediction", {"group_by": ["id"]}, "group_by[0]", "cannot be grouped by id"),
    ("Prediction", {"group_by": ["endpoint.nope"]}, "group_by[0]", 'unknown field "nope" on Endpoint'),
    ("Prediction", {"group_by": ["endpoint.model.framework"]}, "group_by[0]", "one relation only"),
    ("Prediction", {"group_by": ["nope.name"]}, "group_by[0]", "is not a parent of Prediction"),
    ("Endpoint", {"group_by": ["deployments.status"]}, "group_by[0]", "is not a parent of Endpoint"),
    ("Prediction", {"group_by": ["status", "status"]}, "group_by", "names two columns"),
    ("Prediction", {"aggregations": [aggregation("AVG", "nope")]}, "aggregations[0].field", 'unknown field "nope"'),
    ("Workflow", {"aggregations": [aggregation("AVG", "name")]}, "aggregations[0].field", "AVG does not fit name"),
    ("Prediction", {"aggregations": [aggregation("SUM", "status")]}, "aggregations[0].field", "SUM does not fit status"),
    ("Prediction", {"aggregations": [aggregation("AVG", "created_at")]}, "aggregations[0].field", "AVG does not fit created_at"),
    ("Prediction", {"aggregations": [aggregation("PERCENTILE", "created_at", fraction=0.5)]}, "aggregations[0].field", "PERCENTILE does not fit"),
    ("Prediction", {"aggregations": [aggregation("COUNT_DISTINCT", "input")]}, "aggregations[0].field", "COUNT_DISTINCT does not fit input"),
    ("Prediction", {"aggregations": [aggregation("MAX", "endpoint.name")]}, "aggregations[0].field", 'unknown field "endpoint.name"'),
    ("Prediction", {"aggregations": [common_pb2.Aggregation(field="latency")]}, "aggregations[0].op", "op must be one of"),
    ("Prediction", {"aggregations": [aggregation("AVG")]}, "aggregations[0].field", "AVG needs a field"),
    ("Prediction", {"aggregations": [aggregation("COUNT_DISTINCT")]}, "aggregations[0].field", "needs a field"),
    ("Prediction", {"aggregations": [aggregation("PERCENTILE", "latency")]}, "aggregations[0].fraction", "needs a fraction"),
    ("Prediction", {"aggregations": [aggregation("PERCENTILE", "latency", fraction=1.5)]}, "aggregations[0].fraction", "from 0 to 1"),
    ("Prediction", {"aggregations": [aggregation("PERCENTILE", "latency", fraction=-0.1)]}, "aggregations[0].fraction", "from 0 to 1"),
    ("Prediction", {"aggregations": [aggregation("PERCENTILE", "latency", fraction=float("nan"))]}, "aggregations[0].fraction", "from 0 to 1"),
    ("Prediction", {"aggregations": [aggregation("AVG", "latency", fraction=0.5)]}, "aggregations[0].fraction", "PERCENTILE only"),
    ("Prediction", {"aggregations": [aggregation("COUNT"), aggregation("COUNT")]}, "aggregations[1].alias", "'count' names two columns"),
    ("Prediction", {"group_by": ["status"], "aggregations": [aggregation("COUNT", alias="status")]}, "aggregations[0].alias", "names two columns"),
    ("Prediction", {"time_bucket": bucket("created_at", "DAY"), "aggregations": [aggregation("COUNT", alias="bucket_start")]},
     "aggregations[0].alias", "names two columns"),
    ("Prediction", {"aggregations": [aggregation("COUNT", alias="1st")]}, "aggregations[0].alias", "letters, digits and underscores"),
    ("Prediction", {"aggregations": [aggregation("COUNT", alias="a b")]}, "aggregations[0].alias", "letters, digits and underscores"),
    ("Prediction", {"time_bucket": bucket("latency", "DAY")}, "time_bucket.field", "must be a timestamp"),
    ("Prediction", {"time_bucket": bucket("nope", "DAY")}, "time_bucket.field", 'unknown field "nope"'),
    ("Prediction", {"time_bucket": bucket("", "DAY")}, "time_bucket.field", "time_bucket.field is required"),
    ("Prediction", {"time_bucket": common_pb2.TimeBucket(field="created_at")}, "time_bucket.interval", "must be one of HOUR, DAY, WEEK, MONTH"),
    ("Prediction", {"time_bucket": bucket("created_at", "DAY", "Mars/Olympus")}, "time_bucket.time_zone", "not an IANA time zone"),
    ("Prediction", {"time_bucket": bucket("created_at", "DAY", "europe/paris")}, "time_bucket.time_zone", "not an IANA time zone"),
    ("Prediction", {"time_bucket": bucket("created_at", "DAY", "+02:00")}, "time_bucket.time_zone", "not an IANA time zone"),
    ("Prediction", {"order_by": "nope"}, "order_by", "no group_by field, aggregation alias or bucket_start"),
    ("Prediction", {"order_by": "bucket_start"}, "order_by", "no group_by field"),
    ("Prediction", {"order_by": "count sideways"}, "order_by", "is not 'name [asc|desc]'"),
    ("Prediction", {"order_by": "count, count desc"}, "order_by", "twice"),
    ("Prediction", {"limit": -1}, "limit", "limit must not be negative"),
    ("Prediction", {"filter": "latency >"}, "filter", "syntax error"),
    ("Prediction", {"filter": "nope = 1"}, "filter", 'unknown field "nope"'),
    ("Prediction", {"group_by": [f"f{i}" for i in range(17)]}, "group_by", "at most 16"),
]


@pytest.mark.parametrize(("resource", "fields", "field", "words"), INVALID, ids=[f"{c[2]}:{c[3]}" for c in INVALID])
def test_invalid_requests(api, resource, fields, field, words):
    text, violations = invalid(api, resource, **fields)
    assert words in text
    assert violations == [field]


def test_garbage_bytes_are_invalid_argument(api, channel):
    call = channel.unary_unary("/versatil.ml.v1.PredictionService/GetPredictionStats")
    refused(lambda: call(b"\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT)


def test_filter_values_never_become_sql(api, fleet):
    got = of_a(api, fleet, "created_by = \"'; DROP TABLE predictions; --\"")
    assert got == [{"bucket_start": None, "keys": {}, "values": {"count": 0}}]
