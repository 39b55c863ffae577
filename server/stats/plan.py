"""A ``Get<R>Stats`` request checked into a ``Plan``: what to group by, compute, order and keep.

Every name is checked against what the resource allows (``Resource.stats``,
derived from the column kinds unless declared: see ``groupable`` and
``aggregatable``), and every mistake is INVALID_ARGUMENT naming the request
field at fault.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.protobuf.descriptor import EnumDescriptor
from peewee import Field

import models
from server.core.codec import enum_prefix
from server.core.errors import InvalidArgument
from server.core.kinds import Kind, kind_of
from server.core.limits import Limits
from server.core.resource import Relation, Resource
from server.query.filters import compile_filter
from server.query.ordering import parse_order_items
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

EVERY_OP = frozenset(OPS.values())
COUNTS = frozenset({"COUNT", "COUNT_DISTINCT"})
# The default operations of each kind of field, and the kinds a group key may have.
OPS_BY_KIND: dict[Kind, frozenset[str]] = {
    Kind.INTEGER: EVERY_OP,
    Kind.NUMBER: EVERY_OP,
    Kind.TIMESTAMP: COUNTS | {"MIN", "MAX"},
    Kind.ID: COUNTS,
    Kind.ENUM: COUNTS,
    Kind.TEXT: COUNTS,
    Kind.BOOLEAN: COUNTS,
    Kind.JSON: frozenset({"COUNT"}),
    Kind.EMBEDDING: frozenset({"COUNT"}),
}
GROUP_KINDS = frozenset({Kind.ID, Kind.ENUM, Kind.TEXT, Kind.BOOLEAN, Kind.INTEGER, Kind.TIMESTAMP})


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
    if kind_of(field) is not Kind.TIMESTAMP:
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


def _order(text: str, names: list[str]) -> tuple[tuple[str, bool], ...]:
    known = set(names)
    return tuple(
        parse_order_items(
            text,
            "name",
            lambda name: None
            if name in known
            else f"order_by names {name!r}, which is no group_by field, aggregation alias or "
            f"{BUCKET_START} of this request",
        )
    )


def plan_of(resource: Resource, request: common_pb2.StatsRequest, limits: Limits) -> Plan:
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
        where=compile_filter(resource, request.filter, limits),
        keys=keys,
        measures=measures,
        bucket=bucket,
        order=_order(request.order_by, names),
        limit=min(request.limit or DEFAULT_LIMIT, MAX_LIMIT),
    )


# How each operation aggregates a column of the resource's table.
