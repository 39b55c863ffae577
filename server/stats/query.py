"""``Get<R>Stats`` for every resource: Prisma's aggregate, count and groupBy over gRPC.

    response = get_stats(catalog["Prediction"], StatsRequest(
        filter="status = COMPLETED",
        group_by=["endpoint_id"],
        aggregations=[Aggregation(op=AGGREGATION_OP_AVG, field="latency"),
                      Aggregation(op=AGGREGATION_OP_PERCENTILE, field="latency", fraction=0.95)],
        time_bucket=TimeBucket(field="created_at", interval=TIME_BUCKET_INTERVAL_DAY,
                               time_zone="Europe/Paris")), limits)
    # one group per endpoint and day: bucket_start, keys {"endpoint_id": "0190..."},
    # values {"avg_latency": 41.5, "p95_latency": 120.0}

A request first becomes a ``Plan`` (``server.stats.plan``): every name is checked against what the resource allows
(``Resource.stats``, derived from the column types unless declared, see ``groupable`` and
``aggregatable``), and every mistake is INVALID_ARGUMENT naming the request field at fault. The plan
then compiles into one ``SELECT ... GROUP BY`` of Peewee expressions: the filter by
``server.query.filters``, parents one hop up by LEFT JOINs, time buckets by PostgreSQL's
``date_trunc(unit, ts, zone)``, percentiles by ``percentile_cont(f) WITHIN GROUP (ORDER BY ...)``.
Nothing from the request becomes SQL text: names only pick prepared expressions, and values travel
as parameters.

A resource may declare a faster source than its table for the plans it answers exactly
(``StatsFields.faster_source``): predictions read the hourly rollup (``server.stats.rollup``).
"""

import datetime
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

from google.protobuf import struct_pb2, timestamp_pb2
from peewee import JOIN, SQL, Cast, Entity, ModelSelect, Node, NodeList, fn

from server.core.limits import Limits
from server.core.resource import Resource
from server.stats.plan import BUCKET_START, Bucket, Key, Measure, Plan, plan_of
from versatil.ml.v1 import common_pb2


class Source(Protocol):
    """Where groups are computed from: the resource's table, or a faster source it declares."""

    where: Any

    def bucket(self, bucket: Bucket) -> Node: ...

    def key(self, key: Key) -> Node: ...

    def measure(self, measure: Measure) -> Node: ...

    def select(self, columns: list[Node]) -> ModelSelect: ...


AGGREGATES: dict[str, Callable[[Measure], Node]] = {
    "COUNT": lambda m: fn.COUNT(m.field if m.field is not None else SQL("*")),
    "COUNT_DISTINCT": lambda m: fn.COUNT(NodeList((SQL("DISTINCT"), m.field))),
    "SUM": lambda m: fn.SUM(m.field),
    "AVG": lambda m: fn.AVG(m.field),
    "MIN": lambda m: fn.MIN(m.field),
    "MAX": lambda m: fn.MAX(m.field),
    "PERCENTILE": lambda m: NodeList(
        (
            fn.percentile_cont(m.fraction),
            SQL("WITHIN GROUP"),
            NodeList((SQL("ORDER BY"), Cast(m.field, "double precision")), parens=True),
        )
    ),
}


class TableSource:
    """Groups computed from the resource's own rows, with a LEFT JOIN per parent a key reaches."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.where = plan.where
        self.parents: dict[str, Any] = {}

    def bucket(self, bucket: Bucket) -> Node:
        return fn.date_trunc(bucket.unit, bucket.field, bucket.zone)

    def key(self, key: Key) -> Node:
        if key.relation is None:
            return key.field
        name = key.relation.name
        parent = self.parents.setdefault(name, key.relation.target.model.alias(f"parent_{name}"))
        return getattr(parent, key.field.name)

    def measure(self, measure: Measure) -> Node:
        return AGGREGATES[measure.op](measure)

    def select(self, columns: list[Node]) -> ModelSelect:
        model = self.plan.resource.model
        query = model.select(*columns)
        for name, parent in self.parents.items():
            query = query.join_from(model, parent, JOIN.LEFT_OUTER, on=(parent.id == self.plan.resource.relations[name].key))
        return query


def compile_plan(plan: Plan, source: Source) -> ModelSelect:
    """The plan as one query: bucket, keys, then values, in that column order."""
    columns, groups, names = [], [], {}
    if plan.bucket is not None:
        bucket = source.bucket(plan.bucket)
        columns.append(bucket.alias("bucket"))
        groups.append(bucket)
        names[BUCKET_START] = "bucket"
    for i, key in enumerate(plan.keys):
        expression = source.key(key)
        columns.append(expression.alias(f"key_{i}"))
        groups.append(expression)
        names[key.name] = f"key_{i}"
    for i, measure in enumerate(plan.measures):
        columns.append(source.measure(measure).alias(f"value_{i}"))
        names[measure.alias] = f"value_{i}"
    # After the requested order, bucket then keys, so that the order is always total.
    default = [BUCKET_START] if plan.bucket is not None else []
    default += [key.name for key in plan.keys]
    order = [*plan.order, *((name, False) for name in default if name not in dict(plan.order))]
    sorting = [Entity(names[name]).desc() if descending else Entity(names[name]).asc() for name, descending in order]
    query = source.select(columns).where(source.where).group_by(*groups)
    return query.order_by(*sorting).limit(plan.limit)


def rfc3339(moment: datetime.datetime) -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp.ToJsonString()


def _number(value: Any) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=float(value))


def _string(value: Any) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=str(value))


# Database value type -> Value; int64 sums beyond 2^53 lose precision as doubles.
VALUES: dict[type, Callable[[Any], struct_pb2.Value]] = {
    type(None): lambda _: struct_pb2.Value(null_value=struct_pb2.NULL_VALUE),
    bool: lambda value: struct_pb2.Value(bool_value=value),
    int: _number,
    float: _number,
    Decimal: _number,
    str: _string,
    uuid.UUID: _string,
    datetime.datetime: lambda value: struct_pb2.Value(string_value=rfc3339(value)),
}


def to_value(value: Any) -> struct_pb2.Value:
    return next(VALUES[kind](value) for kind in type(value).__mro__ if kind in VALUES)


def respond(plan: Plan, rows: Iterable[tuple[Any, ...]]) -> common_pb2.StatsResponse:
    """The response for rows of ``compile_plan``'s query."""
    response = common_pb2.StatsResponse()
    for row in rows:
        group = response.groups.add()
        values = iter(row)
        if plan.bucket is not None:
            start = next(values)
            if start is not None:  # Rows whose bucket field is NULL group without a bucket_start.
                group.bucket_start.FromDatetime(start)
        for key in plan.keys:
            group.keys[key.name].CopyFrom(to_value(next(values)))
        for measure in plan.measures:
            group.values[measure.alias].CopyFrom(to_value(next(values)))
    return response


def stats_query(plan: Plan, faster: bool = True) -> ModelSelect:
    """The query answering ``plan``: from the resource's faster source when it answers the plan
    and ``faster`` allows it (``StatsFields.faster_source``), else from its table."""
    find = plan.resource.stats.faster_source
    source = (faster and find is not None and find(plan)) or TableSource(plan)
    return compile_plan(plan, source)


def get_stats(resource: Resource, request: common_pb2.StatsRequest, limits: Limits) -> common_pb2.StatsResponse:
    """``Get<R>Stats`` for any resource."""
    plan = plan_of(resource, request, limits)
    return respond(plan, stats_query(plan).tuples())
