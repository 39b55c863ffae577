"""``Get<R>Stats`` for every resource: Prisma's aggregate, count and groupBy over gRPC.

    response = get_stats(RESOURCES["Prediction"], StatsRequest(
        filter="status = COMPLETED",
        group_by=["endpoint_id"],
        aggregations=[Aggregation(op=AGGREGATION_OP_AVG, field="latency"),
                      Aggregation(op=AGGREGATION_OP_PERCENTILE, field="latency", fraction=0.95)],
        time_bucket=TimeBucket(field="created_at", interval=TIME_BUCKET_INTERVAL_DAY,
                               time_zone="Europe/Paris")))
    # one group per endpoint and day: bucket_start, keys {"endpoint_id": "0190..."},
    # values {"avg_latency": 41.5, "p95_latency": 120.0}

A request first becomes a ``Plan``: every name is checked against what the resource allows
(``Resource.stats``, derived from the column types unless declared, see ``groupable`` and
``aggregatable``), and every mistake is INVALID_ARGUMENT naming the request field at fault. The plan
then compiles into one ``SELECT ... GROUP BY`` of Peewee expressions: the filter by
``server.filters``, parents one hop up by LEFT JOINs, time buckets by PostgreSQL's
``date_trunc(unit, ts, zone)``, percentiles by ``percentile_cont(f) WITHIN GROUP (ORDER BY ...)``.
Nothing from the request becomes SQL text: names only pick prepared expressions, and values travel
as parameters.

Prediction stats that the hourly rollup can answer exactly are read from it instead of the raw
rows (``models.PredictionHourlyRollup``, kept exact by triggers): see ``rollup_source``. Only
for admins: others see their own predictions only (row-level security), which the rollup does
not tell apart.
"""
from __future__ import annotations

import datetime
import functools
import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor
from peewee import (
    JOIN,
    OP,
    SQL,
    BigIntegerField,
    BooleanField,
    Case,
    Cast,
    DoubleField,
    Entity,
    Expression,
    Field,
    ForeignKeyField,
    IntegerField,
    ModelSelect,
    Negated,
    Node,
    NodeList,
    TextField,
    UUIDField,
    fn,
)
from pgvector.peewee import VectorField
from playhouse.postgres_ext import BinaryJSONField, DateTimeTZField

import models
from models import EnumField
from server.convert import enum_prefix
from server.errors import InvalidArgument
from server import principal
from server.filters import compile_filter
from server.resources import Relation, Resource
from versatil.ml.v1 import common_pb2

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
MAX_GROUP_BY = 16
MAX_AGGREGATIONS = 64
DEFAULT_TIME_ZONE = "UTC"
BUCKET_START = "bucket_start"
ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _short_names(descriptor: EnumDescriptor) -> dict[int, str]:
    """Enum number -> name without Buf's prefix, the zero value left out."""
    prefix = enum_prefix(descriptor)
    return {value.number: value.name[len(prefix) :] for value in descriptor.values if value.number}


OPS = _short_names(common_pb2.AggregationOp.DESCRIPTOR)  # 1 -> "COUNT", ...
# TimeBucketInterval -> the unit of PostgreSQL's date_trunc (whose weeks start on Monday).
UNITS = {number: name.lower() for number, name in _short_names(common_pb2.TimeBucketInterval.DESCRIPTOR).items()}

# What a column holds, by its Peewee field class (looked up along the MRO, most specific first).
KINDS: dict[type[Field], str] = {
    EnumField: "enum",
    ForeignKeyField: "id",
    UUIDField: "id",
    DateTimeTZField: "timestamp",
    BooleanField: "boolean",
    IntegerField: "integer",
    BigIntegerField: "integer",
    DoubleField: "number",
    BinaryJSONField: "JSON",
    VectorField: "embedding",
    TextField: "string",
}
EVERY_OP = frozenset(OPS.values())
COUNTS = frozenset({"COUNT", "COUNT_DISTINCT"})
# The default operations of each kind of field, and the kinds a group key may have.
OPS_BY_KIND: dict[str, frozenset[str]] = {
    "integer": EVERY_OP,
    "number": EVERY_OP,
    "timestamp": COUNTS | {"MIN", "MAX"},
    "id": COUNTS,
    "enum": COUNTS,
    "string": COUNTS,
    "boolean": COUNTS,
    "JSON": frozenset({"COUNT"}),
    "embedding": frozenset({"COUNT"}),
}
GROUP_KINDS = frozenset({"id", "enum", "string", "boolean", "integer", "timestamp"})


def kind_of(field: Field) -> str:
    return next(KINDS[kind] for kind in type(field).__mro__ if kind in KINDS)


@functools.cache
def groupable(resource: Resource) -> frozenset[str]:
    """The resource's own fields a group_by may name (``id`` would make a group per row)."""
    if resource.stats.group_by is not None:
        return frozenset(resource.stats.group_by)
    return frozenset(
        name for name, field in resource.fields.items() if name != "id" and kind_of(field) in GROUP_KINDS
    )


@functools.cache
def aggregatable(resource: Resource) -> dict[str, frozenset[str]]:
    """Field -> the aggregation operations it allows."""
    if resource.stats.aggregate is not None:
        return {name: frozenset(ops) for name, ops in resource.stats.aggregate.items()}
    return {name: OPS_BY_KIND[kind_of(field)] for name, field in resource.fields.items()}


@functools.lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    """The IANA names the database knows, read once per process."""
    return frozenset(name for (name,) in models.database.execute_sql("SELECT name FROM pg_timezone_names"))


@dataclass(frozen=True)
class Key:
    """A group_by field: a column of the resource, or of a parent one hop up."""

    name: str  # As in the request: "status", "model.framework".
    field: Field
    relation: Relation | None = None


@dataclass(frozen=True)
class Measure:
    """One aggregation, checked: ``op`` is a short name (``AVG``), ``field`` None counts rows."""

    alias: str
    op: str
    field_name: str = ""
    field: Field | None = None
    fraction: float | None = None


@dataclass(frozen=True)
class Bucket:
    """A time bucket, checked: the timestamp, the unit and the zone of ``date_trunc``."""

    field_name: str
    field: Field
    unit: str  # date_trunc's: hour, day, week or month.
    zone: str


@dataclass(frozen=True)
class Plan:
    """A checked request: what to group by, what to compute, in which order, how many groups."""

    resource: Resource
    where: Any
    keys: tuple[Key, ...]
    measures: tuple[Measure, ...]
    bucket: Bucket | None
    order: tuple[tuple[str, bool], ...]  # (a key name, an alias or bucket_start; descending?)
    limit: int


def default_alias(op: str, field_name: str, fraction: float | None = None) -> str:
    """``count``, ``avg_latency``, ``count_distinct_status``, ``p99_9_latency``..."""
    if op == "PERCENTILE":
        percent = format((Decimal(repr(fraction)) * 100).normalize(), "f")
        return f"p{percent.replace('.', '_')}_{field_name}"
    return f"{op.lower()}_{field_name}" if field_name else op.lower()


def _unknown(resource: Resource, name: str, where: str) -> InvalidArgument:
    return InvalidArgument(f'unknown field "{name}" on {resource.name}', where)


def _key(resource: Resource, path: str, where: str) -> Key:
    head, _, rest = path.partition(".")
    if not rest:
        if path in groupable(resource):
            return Key(path, resource.fields[path])
        if path in resource.fields:
            kind = kind_of(resource.fields[path])
            raise InvalidArgument(f"{resource.name} cannot be grouped by {path} (a {kind} field)", where)
        raise _unknown(resource, path, where)
    relation = resource.relations.get(head)
    if relation is None or relation.many:
        raise InvalidArgument(
            f'"{head}" in "{path}" is not a parent of {resource.name}: group_by follows a foreign key '
            "named without _id, one hop up",
            where,
        )
    target = relation.target
    if rest not in groupable(target):
        if "." in rest:
            raise InvalidArgument(f'group_by follows one relation only, not "{path}"', where)
        if rest in target.fields:
            raise InvalidArgument(f"{target.name} cannot be grouped by {rest} ({path})", where)
        raise _unknown(target, rest, where)
    return Key(path, target.fields[rest], relation)


def _measure(resource: Resource, aggregation: common_pb2.Aggregation, where: str) -> Measure:
    op = OPS.get(aggregation.op)
    if op is None:
        raise InvalidArgument(f"{where}.op must be one of {', '.join(OPS.values())}", f"{where}.op")
    name, field = aggregation.field, None
    if name:
        if name not in resource.fields:
            raise _unknown(resource, name, f"{where}.field")
        allowed = aggregatable(resource).get(name, frozenset())
        if op not in allowed:
            kind = kind_of(resource.fields[name])
            fits = f"only {', '.join(sorted(allowed))}" if allowed else "no aggregation"
            raise InvalidArgument(
                f"{op} does not fit {name} on {resource.name}: a {kind} field takes {fits}", f"{where}.field"
            )
        field = resource.fields[name]
    elif op != "COUNT":
        raise InvalidArgument(f"{op} needs a field (only COUNT counts rows)", f"{where}.field")
    fraction = None
    if op == "PERCENTILE":
        if not aggregation.HasField("fraction"):
            raise InvalidArgument("PERCENTILE needs a fraction from 0 to 1 (0.95)", f"{where}.fraction")
        fraction = aggregation.fraction
        if not 0 <= fraction <= 1:
            raise InvalidArgument(f"fraction must be from 0 to 1, got {fraction}", f"{where}.fraction")
    elif aggregation.HasField("fraction"):
        raise InvalidArgument(f"fraction applies to PERCENTILE only, not {op}", f"{where}.fraction")
    alias = aggregation.alias or default_alias(op, name, fraction)
    if not ALIAS.fullmatch(alias):
        raise InvalidArgument(
            f"alias {alias!r} must be letters, digits and underscores, not starting with a digit",
            f"{where}.alias",
        )
    return Measure(alias, op, name, field, fraction)


def _bucket(resource: Resource, bucket: common_pb2.TimeBucket) -> Bucket:
    if not bucket.field:
        raise InvalidArgument("time_bucket.field is required: a timestamp such as created_at", "time_bucket.field")
    field = resource.fields.get(bucket.field)
    if field is None:
        raise _unknown(resource, bucket.field, "time_bucket.field")
    if kind_of(field) != "timestamp":
        raise InvalidArgument(
            f"time_bucket.field must be a timestamp; {bucket.field} on {resource.name} is a {kind_of(field)} field",
            "time_bucket.field",
        )
    unit = UNITS.get(bucket.interval)
    if unit is None:
        names = ", ".join(name.upper() for name in UNITS.values())
        raise InvalidArgument(f"time_bucket.interval must be one of {names}", "time_bucket.interval")
    zone = bucket.time_zone or DEFAULT_TIME_ZONE
    if zone not in time_zones():
        raise InvalidArgument(
            f"time_zone {zone!r} is not an IANA time zone name such as 'Europe/Paris'", "time_bucket.time_zone"
        )
    return Bucket(bucket.field, field, unit, zone)


def _order(text: str, names: Iterable[str]) -> tuple[tuple[str, bool], ...]:
    known, order = set(names), {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        words = item.split()
        direction = words[1].lower() if len(words) == 2 else "asc"
        if len(words) > 2 or direction not in ("asc", "desc"):
            raise InvalidArgument(f"order_by item {item!r} is not 'name [asc|desc]'", "order_by")
        if words[0] not in known:
            raise InvalidArgument(
                f"order_by names {words[0]!r}, which is no group_by field, aggregation alias or "
                f"{BUCKET_START} of this request",
                "order_by",
            )
        if words[0] in order:
            raise InvalidArgument(f"order_by names {words[0]!r} twice", "order_by")
        order[words[0]] = direction == "desc"
    return tuple(order.items())


def plan_of(resource: Resource, request: common_pb2.StatsRequest) -> Plan:
    """The request checked against what ``resource`` allows; INVALID_ARGUMENT otherwise."""
    if request.limit < 0:
        raise InvalidArgument("limit must not be negative", "limit")
    if len(request.group_by) > MAX_GROUP_BY:
        raise InvalidArgument(f"group_by names at most {MAX_GROUP_BY} fields", "group_by")
    if len(request.aggregations) > MAX_AGGREGATIONS:
        raise InvalidArgument(f"aggregations holds at most {MAX_AGGREGATIONS} items", "aggregations")
    keys = tuple(_key(resource, path, f"group_by[{i}]") for i, path in enumerate(request.group_by))
    measures = tuple(_measure(resource, a, f"aggregations[{i}]") for i, a in enumerate(request.aggregations))
    measures = measures or (Measure(default_alias("COUNT", ""), "COUNT"),)
    bucket = _bucket(resource, request.time_bucket) if request.HasField("time_bucket") else None
    # The names of the result's columns, which order_by may use: bucket_start, keys, aliases.
    leading = [BUCKET_START] if bucket else []
    names = [*leading, *(key.name for key in keys), *(m.alias for m in measures)]
    for i, name in enumerate(names):
        if name in names[:i]:
            at = i - len(leading) - len(keys)
            where = "group_by" if at < 0 else f"aggregations[{at}].alias"
            raise InvalidArgument(f"{name!r} names two columns of the result; give one an alias", where)
    return Plan(
        resource=resource,
        where=compile_filter(resource, request.filter),
        keys=keys,
        measures=measures,
        bucket=bucket,
        order=_order(request.order_by, names),
        limit=min(request.limit or DEFAULT_LIMIT, MAX_LIMIT),
    )


# How each operation aggregates a column of the resource's table.
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


def compile_plan(plan: Plan, source: TableSource | RollupSource) -> ModelSelect:
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


# ---------------------------------------------------------------------------
# The hourly rollup of predictions.

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


# ---------------------------------------------------------------------------
# Results.


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


def stats_query(plan: Plan, use_rollup: bool = True) -> ModelSelect:
    """The query answering ``plan``: from the rollup when it can and ``use_rollup``, else the table."""
    source = (use_rollup and rollup_source(plan)) or TableSource(plan)
    return compile_plan(plan, source)


def get_stats(resource: Resource, request: common_pb2.StatsRequest) -> common_pb2.StatsResponse:
    """``Get<R>Stats`` for any resource."""
    plan = plan_of(resource, request)
    return respond(plan, stats_query(plan).tuples())
