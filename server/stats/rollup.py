"""The hourly rollup of predictions: a faster stats source than the predictions themselves.

``models.PredictionHourlyRollup`` is kept exact by triggers (migration 0004); prediction stats
that it answers exactly are read from it (``rollup_source``, declared as the Prediction
resource's ``StatsFields.faster_source``). Only for admins: others see their own predictions
only (row-level security), which the rollup does not tell apart.
"""
from __future__ import annotations

import datetime
import functools
import zoneinfo
from collections.abc import Callable
from typing import Any

from peewee import OP, Case, Cast, Expression, Field, ModelSelect, Negated, Node, fn

import models
from server.core import principal
from server.stats.plan import Bucket, Key, Measure, Plan

Prediction, Rollup = models.Prediction, models.PredictionHourlyRollup
HOUR = datetime.timedelta(hours=1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
# Prediction column -> the rollup column holding it, for group keys and filters.
ROLLUP_KEYS = {"endpoint_id": Rollup.endpoint_id, "model_version_id": Rollup.model_version_id, "status": Rollup.status}


def _rollup_count() -> Node:
    return fn.COALESCE(fn.SUM(Rollup.row_count), 0)


def _rollup_measures() -> dict[tuple[str, str], Callable[[], Node]]:
    count_confidence = fn.SUM(Rollup.confidence_count)
    measures: dict[tuple[str, str], Callable[[], Node]] = {
        # A NOT NULL column is counted in every row.
        ("COUNT", f.column_name): _rollup_count for f in Prediction._meta.sorted_fields if not f.null
    }
    measures.update(
        {
            ("COUNT", ""): _rollup_count,
            ("COUNT", "confidence"): lambda: fn.COALESCE(count_confidence, 0),
            ("SUM", "latency"): lambda: fn.SUM(Rollup.latency_sum),
            ("AVG", "latency"): lambda: fn.SUM(Rollup.latency_sum) / fn.NULLIF(fn.SUM(Rollup.row_count), 0),
            ("MIN", "latency"): lambda: fn.MIN(Rollup.latency_min),
            ("MAX", "latency"): lambda: fn.MAX(Rollup.latency_max),
            ("SUM", "confidence"): lambda: Case(None, [(count_confidence > 0, fn.SUM(Rollup.confidence_sum))]),
            ("AVG", "confidence"): lambda: fn.SUM(Rollup.confidence_sum)
            / Cast(fn.NULLIF(count_confidence, 0), "double precision"),
            ("MIN", "confidence"): lambda: fn.MIN(Rollup.confidence_min),
            ("MAX", "confidence"): lambda: fn.MAX(Rollup.confidence_max),
        }
    )
    return measures


ROLLUP_MEASURES = _rollup_measures()


@functools.cache
def whole_hour_zone(name: str) -> bool:
    """Whether ``name`` was a whole number of hours from UTC since 1970, sampled weekly (so that
    every bucket boundary on its clock falls on a UTC hour, where the rollup's hours begin)."""
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    moment, end = EPOCH, datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)
    while moment < end:
        if moment.astimezone(zone).utcoffset() % HOUR:
            return False
        moment += datetime.timedelta(weeks=1)
    return True


def _on_hour(value: Any) -> bool:
    return isinstance(value, datetime.datetime) and value.tzinfo is not None and not (value - EPOCH) % HOUR


def _rollup_filter(node: Any) -> Any:
    """A compiled prediction filter over the rollup's columns, or None when the rollup cannot
    answer it exactly: it may compare the key columns in any way, and created_at only with >= or
    < to a whole UTC hour (a set of whole hours, which NOT, AND and OR keep whole)."""
    if node is True:
        return True
    if isinstance(node, Negated):
        inner = _rollup_filter(node.node)
        return None if inner is None else Negated(inner)
    if not isinstance(node, Expression):
        return None
    if node.op in (OP.AND, OP.OR):
        lhs, rhs = _rollup_filter(node.lhs), _rollup_filter(node.rhs)
        return None if lhs is None or rhs is None else Expression(lhs, node.op, rhs, node.flat)
    field, value = node.lhs, node.rhs
    if not isinstance(field, Field) or field.model is not Prediction or isinstance(value, Node):
        return None
    if field.column_name == "created_at":
        if node.op in (OP.GTE, OP.LT) and _on_hour(value):
            return Expression(Rollup.hour, node.op, value, node.flat)
        return None
    column = ROLLUP_KEYS.get(field.column_name)
    return None if column is None else Expression(column, node.op, value, node.flat)


class RollupSource:
    """Groups computed from ``prediction_hourly_rollups`` instead of the predictions themselves."""

    def __init__(self, where: Any) -> None:
        self.where = where

    def bucket(self, bucket: Bucket) -> Node:
        return fn.date_trunc(bucket.unit, Rollup.hour, bucket.zone)

    def key(self, key: Key) -> Node:
        return ROLLUP_KEYS[key.name]

    def measure(self, measure: Measure) -> Node:
        return ROLLUP_MEASURES[(measure.op, measure.field_name)]()

    def select(self, columns: list[Node]) -> ModelSelect:
        return Rollup.select(*columns)


def rollup_source(plan: Plan) -> RollupSource | None:
    """The rollup, when it answers ``plan`` exactly: prediction stats bucketed (if at all) by
    created_at per HOUR or coarser in a zone whose offsets are whole hours, grouped by endpoint_id,
    model_version_id and status, counting, summing, averaging, or taking the minimum or maximum of
    latency and confidence, and filtered as ``_rollup_filter`` allows."""
    if plan.resource.model is not Prediction:
        return None
    if not principal.sees_everything():
        return None  # The rollup sums every principal's predictions; row-level security hides it.
    bucket = plan.bucket
    if bucket is not None and (bucket.field_name != "created_at" or not whole_hour_zone(bucket.zone)):
        return None
    if any(key.relation is not None or key.name not in ROLLUP_KEYS for key in plan.keys):
        return None
    if any((m.op, m.field_name) not in ROLLUP_MEASURES for m in plan.measures):
        return None
    where = _rollup_filter(plan.where)
    return None if where is None else RollupSource(where)
