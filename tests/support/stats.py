"""Helpers for the stats tests: build StatsRequests, call Get<R>Stats, read the groups as plain data.

    response = stats(api, "Prediction", group_by=["status"], aggregations=[aggregation("AVG", "latency")])
    groups(response)  # [{"bucket_start": None, "keys": {"status": "COMPLETED"}, "values": {...}}]
"""
from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2

import models
from versatil.ml.v1 import common_pb2

UTC = datetime.timezone.utc


def aggregation(op: str, field: str = "", **fields: Any) -> common_pb2.Aggregation:
    """``aggregation("PERCENTILE", "latency", fraction=0.95)``."""
    return common_pb2.Aggregation(op=common_pb2.AggregationOp.Value(f"AGGREGATION_OP_{op}"), field=field, **fields)


def bucket(field: str, interval: str, time_zone: str = "") -> common_pb2.TimeBucket:
    """``bucket("created_at", "DAY", "Europe/Paris")``."""
    number = common_pb2.TimeBucketInterval.Value(f"TIME_BUCKET_INTERVAL_{interval}")
    return common_pb2.TimeBucket(field=field, interval=number, time_zone=time_zone)


def stats(api: Any, resource: str, **fields: Any) -> common_pb2.StatsResponse:
    """Call ``Get<resource>Stats`` through the real channel."""
    return getattr(api.stub(resource), f"Get{resource}Stats")(common_pb2.StatsRequest(**fields))


def plain(value: struct_pb2.Value) -> Any:
    """A Value as Python: None, a float, a string or a bool."""
    kind = value.WhichOneof("kind")
    return None if kind == "null_value" else getattr(value, kind)


def groups(response: common_pb2.StatsResponse) -> list[dict[str, Any]]:
    return [
        {
            "bucket_start": group.bucket_start.ToJsonString() if group.HasField("bucket_start") else None,
            "keys": {name: plain(value) for name, value in group.keys.items()},
            "values": {name: plain(value) for name, value in group.values.items()},
        }
        for group in response.groups
    ]


def at(text: str) -> datetime.datetime:
    """``at("2030-01-07 00:30")``: a UTC instant."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def prediction_values(row: dict[str, Any], endpoint_id: str = "", model_version_id: str = "") -> dict[str, Any]:
    """A prediction for ``Prediction.insert_many``: its created_at as given (the API sets it to
    now), its parents from the row or else the ones given."""
    return {
        "id": uuid.uuid4(),
        "endpoint": uuid.UUID(str(row.get("endpoint_id") or endpoint_id)),
        "model_version": uuid.UUID(str(row.get("model_version_id") or model_version_id)),
        "input": {},
        "latency": row.get("latency", 0),
        "confidence": row.get("confidence"),
        "status": row.get("status", "COMPLETED"),
        "created_by": row.get("created_by"),
        "completed_at": row.get("completed_at"),
        "created_at": row["created_at"],
        "updated_at": row["created_at"],
    }


def insert_predictions(endpoint_id: str, model_version_id: str, rows: Iterable[dict[str, Any]]) -> list[uuid.UUID]:
    """Insert predictions directly, in one transaction; returns their ids."""
    batch = [prediction_values(row, endpoint_id, model_version_id) for row in rows]
    if batch:
        with models.database.connection_context(), models.database.atomic():
            models.Prediction.insert_many(batch).execute()
    return [values["id"] for values in batch]
