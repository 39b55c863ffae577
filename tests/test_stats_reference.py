"""GetPredictionStats against a plain-Python computation over the same rows, for random requests.

Hypothesis draws at least 300 requests per run over a fixed set of predictions chosen to be
awkward: NULL confidences, authors and completion times, repeated latencies, timestamps around the
daylight-saving changes of a dozen zones (half-hour and 45-minute offsets, a 30-minute shift, and
midnights that do not exist or exist twice), and around month and week boundaries. Half of the
requests are shaped so that the hourly rollup answers them, half so that the raw rows do.

The reference follows API.md, not the server's code: filters in SQL's three-valued logic, NULL
keys as their own group, aggregates over non-NULL values (``percentile_cont``'s interpolation),
buckets on the zone's calendar (weeks from Monday; a local midnight that does not exist or exists
twice resolved as PostgreSQL does, to the smaller UTC offset; hours kept on the row's own offset),
exactly one group without group_by or bucket, then order_by, the default order and the limit.
"""
from __future__ import annotations

import datetime
import functools
import math
import operator
import random
import zoneinfo
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
from server.core.limits import Limits
from server.stats.plan import BUCKET_START, DEFAULT_LIMIT, plan_of
from server.stats.rollup import rollup_source
from tests.support import RESOURCES
from tests.support.stats import UTC, aggregation, bucket, groups, insert_predictions
from versatil.ml.v1 import common_pb2

EXAMPLES = 300
ZONES = [
    "UTC", "Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Tokyo", "America/Havana",
    "America/Sao_Paulo", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns",
    "Pacific/Chatham",
]
WHOLE_HOUR_ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Tokyo", "America/Havana",
                    "America/Sao_Paulo"]
STATUSES = ["PENDING", "COMPLETED", "FAILED"]
AUTHORS = ["alice", "bob", "carol"]
ENDPOINT_NAMES = ["alpha", "beta", "gamma"]
UNITS = {"HOUR": "hour", "DAY": "day", "WEEK": "week", "MONTH": "month"}
# Fractions and the percent API.md writes in their default alias.
FRACTIONS = {0.0: "0", 0.01: "1", 0.025: "2_5", 0.1: "10", 0.25: "25", 0.5: "50", 0.9: "90", 0.95: "95",
             0.99: "99", 0.999: "99_9", 0.9999: "99_99", 1.0: "100"}
ROWS = 400


# --------------------------------------------------------------------------- the rows


def transitions(zone_name: str, year: int) -> list[datetime.datetime]:
    """The instants ``zone_name`` changed its UTC offset in ``year``."""
    zone, found = zoneinfo.ZoneInfo(zone_name), []
    moment = datetime.datetime(year, 1, 1, tzinfo=UTC)
    previous = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += datetime.timedelta(hours=1)
        offset = moment.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(moment)
            previous = offset
    return found


@functools.cache
def anchors() -> list[datetime.datetime]:
    """Instants near which buckets are hard: offset changes, and month starts (which fall on Mondays
    or Sundays too, for weeks)."""
    found = [t for zone in ZONES for t in transitions(zone, 2029)]
    found += transitions("America/Sao_Paulo", 2018) + transitions("America/Sao_Paulo", 2019)
    found += [datetime.datetime(2029, month, 1, tzinfo=UTC) for month in range(1, 13)]
    return found


def make_rows(fleet: dict[str, Any]) -> list[dict[str, Any]]:
    rng, near = random.Random(20290311), anchors()
    rows = []
    for _ in range(ROWS):
        if rng.random() < 0.8:
            created = rng.choice(near) + datetime.timedelta(seconds=rng.randint(-40 * 3600, 40 * 3600))
        else:
            created = datetime.datetime(2029, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=rng.randint(0, 364 * 86400))
        if rng.random() < 0.3:
            created += datetime.timedelta(microseconds=rng.randint(1, 999_999))
        endpoint = rng.randrange(3)
        version = rng.randrange(2)
        rows.append({
            "endpoint_id": fleet["endpoints"][endpoint],
            "endpoint.name": ENDPOINT_NAMES[endpoint],
            "model_version_id": fleet["versions"][version],
            "model_version.version": version + 1,
            "latency": rng.randint(0, 40),
            "confidence": None if rng.random() < 0.25 else rng.randint(0, 64) / 64,
            "status": rng.choice(STATUSES),
            "created_by": None if rng.random() < 0.3 else rng.choice(AUTHORS),
            "created_at": created,
            "completed_at": None if rng.random() < 0.4 else created + datetime.timedelta(seconds=rng.randint(0, 7200)),
        })
    return rows


@pytest.fixture(scope="module")
def fleet(api: Any) -> dict[str, Any]:
    model = api.create("Model")
    found = {
        "endpoints": [api.create("Endpoint", model_id=model.id, name=name).id for name in ENDPOINT_NAMES],
        "versions": [api.create("ModelVersion", model_id=model.id, version=n).id for n in (1, 2)],
    }
    found["rows"] = make_rows(found)
    insert_predictions(found["endpoints"][0], found["versions"][0], found["rows"])
    return found


# --------------------------------------------------------------------------- the reference

Predicate = Callable[[dict[str, Any]], "bool | None"]


def rfc3339(moment: datetime.datetime) -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp.ToJsonString()


def compare(field: str, op: Callable[[Any, Any], bool], value: Any) -> Predicate:
    return lambda row: None if row[field] is None else op(row[field], value)


def negate(inner: Predicate) -> Predicate:
    def check(row: dict[str, Any]) -> bool | None:
        result = inner(row)
        return None if result is None else not result

    return check


def both(left: Predicate, right: Predicate) -> Predicate:
    def check(row: dict[str, Any]) -> bool | None:
        results = (left(row), right(row))
        return False if False in results else None if None in results else True

    return check


def either(left: Predicate, right: Predicate) -> Predicate:
    def check(row: dict[str, Any]) -> bool | None:
        results = (left(row), right(row))
        return True if True in results else None if None in results else False

    return check


def bucket_start(moment: datetime.datetime | None, unit: str, zone_name: str) -> datetime.datetime | None:
    if moment is None:
        return None
    zone = zoneinfo.ZoneInfo(zone_name)
    local = moment.astimezone(zone)
    if unit == "hour":  # On the clock of the row's own offset.
        return moment - datetime.timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    start = local.replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    if unit == "week":
        start -= datetime.timedelta(days=start.weekday())
    elif unit == "month":
        start = start.replace(day=1)
    # A local time in a gap or a fold has two readings; PostgreSQL takes the smaller UTC offset.
    offset = min(start.replace(tzinfo=zone, fold=fold).utcoffset() for fold in (0, 1))
    return (start - offset).replace(tzinfo=UTC)


def percentile_cont(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def aggregate(op: str, field: str, fraction: float | None, rows: list[dict[str, Any]]) -> Any:
    if op == "COUNT":
        return len(rows) if not field else sum(row[field] is not None for row in rows)
    values = [row[field] for row in rows if row[field] is not None]
    if op == "COUNT_DISTINCT":
        return len(set(values))
    if not values:
        return None
    if op == "PERCENTILE":
        return percentile_cont([float(v) for v in values], fraction)
    return {"SUM": sum, "AVG": lambda v: sum(v) / len(v), "MIN": min, "MAX": max}[op](values)


def as_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return rfc3339(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def sort_key(value: Any) -> tuple[Any, ...]:
    """Ascending with NULLs last, as PostgreSQL sorts (descending reverses it: NULLs first)."""
    return (True,) if value is None else (False, value)


def reference(rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    matching = [row for row in rows if spec["predicate"](row) is True]
    keys, measures, time = spec["group_by"], spec["measures"], spec["bucket"]
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in matching:
        start = bucket_start(row[time[0]], UNITS[time[1]], time[2]) if time else None
        grouped[(start, *(row[key] for key in keys))].append(row)
    if not keys and not time:
        grouped = {(None,): matching}
    result = []
    for (start, *key_values), members in grouped.items():
        result.append({
            "start": start,
            "keys": dict(zip(keys, key_values)),
            "values": {alias: aggregate(op, field, fraction, members) for alias, op, field, fraction in measures},
        })
    order = list(spec["order"])
    named = {name for name, _ in order}
    order += [(name, False) for name in ([BUCKET_START] if time else []) + keys if name not in named]

    def value_of(group: dict[str, Any], name: str) -> Any:
        if name == BUCKET_START:
            return group["start"]
        return group["keys"][name] if name in group["keys"] else group["values"][name]

    for name, descending in reversed(order):
        result.sort(key=lambda group: sort_key(value_of(group, name)), reverse=descending)
    return [
        {
            "bucket_start": rfc3339(group["start"]) if group["start"] is not None else None,
            "keys": {k: as_value(v) for k, v in group["keys"].items()},
            "values": {k: as_value(v) for k, v in group["values"].items()},
        }
        for group in result[: spec["limit"] or DEFAULT_LIMIT]
    ]


# --------------------------------------------------------------------------- the requests

ALL_GROUPS = ["status", "endpoint_id", "model_version_id", "created_by", "endpoint.name", "model_version.version",
              "latency", "completed_at"]
ROLLUP_GROUPS = ["status", "endpoint_id", "model_version_id"]
ALL_MEASURES = (
    [("COUNT", ""), ("COUNT", "confidence"), ("COUNT", "created_by"), ("COUNT", "completed_at"), ("COUNT", "latency")]
    + [("COUNT_DISTINCT", f) for f in ("status", "created_by", "latency", "endpoint_id", "completed_at")]
    + [(op, f) for op in ("SUM", "AVG", "MIN", "MAX", "PERCENTILE") for f in ("latency", "confidence")]
    + [(op, f) for op in ("MIN", "MAX") for f in ("created_at", "completed_at")]
)
ROLLUP_MEASURES = [("COUNT", ""), ("COUNT", "confidence"), ("COUNT", "latency")] + [
    (op, f) for op in ("SUM", "AVG", "MIN", "MAX") for f in ("latency", "confidence")
]
# Aliases whose values are exact in both computations, and so safe to order by.
EXACT_OPS = {"COUNT", "COUNT_DISTINCT", "MIN", "MAX"}


@st.composite
def moments(draw: Any, aligned: bool) -> datetime.datetime:
    base = anchors()[draw(st.integers(0, len(anchors()) - 1))].replace(minute=0, second=0)
    moment = base + datetime.timedelta(hours=draw(st.integers(-30, 30)))
    if not aligned:
        moment += datetime.timedelta(minutes=draw(st.integers(1, 59)))
    return moment


def literal(moment: datetime.datetime) -> str:
    return f'"{moment.isoformat().replace("+00:00", "Z")}"'


OPERATORS = {">=": operator.ge, "<": operator.lt, ">": operator.gt, "<=": operator.le, "=": operator.eq,
             "!=": operator.ne}


@st.composite
def atoms(draw: Any, endpoints: tuple[str, ...], versions: tuple[str, ...], rollup: bool) -> tuple[str, Predicate]:
    kinds = ["status", "status_in", "endpoint", "version", "created_at"]
    if not rollup:
        kinds += ["latency", "confidence", "confidence_null", "author", "completed_null", "endpoint_name", "created_at_any"]
    kind = draw(st.sampled_from(kinds))
    if kind == "status":
        value, op = draw(st.sampled_from(STATUSES)), draw(st.sampled_from(["=", "!="]))
        return f"status {op} {value}", compare("status", OPERATORS[op], value)
    if kind == "status_in":
        values = draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2, unique=True))
        return f"status IN ({', '.join(values)})", compare("status", lambda x, v: x in v, set(values))
    if kind in ("endpoint", "version"):
        field = "endpoint_id" if kind == "endpoint" else "model_version_id"
        value = draw(st.sampled_from(endpoints if kind == "endpoint" else versions))
        op = draw(st.sampled_from(["=", "!="]))
        return f'{field} {op} "{value}"', compare(field, OPERATORS[op], value)
    if kind in ("created_at", "created_at_any"):
        moment = draw(moments(aligned=kind == "created_at"))
        op = draw(st.sampled_from([">=", "<"] if kind == "created_at" else list(OPERATORS)))
        return f"created_at {op} {literal(moment)}", compare("created_at", OPERATORS[op], moment)
    if kind == "latency":
        value, op = draw(st.integers(0, 40)), draw(st.sampled_from(list(OPERATORS)))
        return f"latency {op} {value}", compare("latency", OPERATORS[op], value)
    if kind == "confidence":
        value, op = draw(st.integers(0, 64)) / 64, draw(st.sampled_from(list(OPERATORS)))
        return f"confidence {op} {value}", compare("confidence", OPERATORS[op], value)
    if kind in ("confidence_null", "completed_null"):
        field = "confidence" if kind == "confidence_null" else "completed_at"
        is_null = draw(st.booleans())
        return f"{field} {'=' if is_null else '!='} null", lambda row: (row[field] is None) == is_null
    if kind == "author":
        value = draw(st.sampled_from(AUTHORS))
        return f'created_by = "{value}"', compare("created_by", operator.eq, value)
    name = draw(st.sampled_from(ENDPOINT_NAMES))
    return f'endpoint.name = "{name}"', lambda row: row["endpoint.name"] == name


def filters(endpoints: tuple[str, ...], versions: tuple[str, ...], rollup: bool) -> st.SearchStrategy[tuple[str, Predicate]]:
    def combine(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            children.map(lambda c: (f"NOT ({c[0]})", negate(c[1]))),
            st.tuples(children, children).map(lambda p: (f"({p[0][0]}) AND ({p[1][0]})", both(p[0][1], p[1][1]))),
            st.tuples(children, children).map(lambda p: (f"({p[0][0]}) OR ({p[1][0]})", either(p[0][1], p[1][1]))),
        )

    return st.recursive(atoms(endpoints, versions, rollup), combine, max_leaves=4)


@st.composite
def requests(draw: Any, endpoints: tuple[str, ...], versions: tuple[str, ...]) -> dict[str, Any]:
    rollup = draw(st.booleans())
    group_by = draw(st.lists(st.sampled_from(ROLLUP_GROUPS if rollup else ALL_GROUPS), max_size=2, unique=True))
    chosen = draw(st.lists(st.sampled_from(ROLLUP_MEASURES if rollup else ALL_MEASURES), min_size=1, max_size=4))
    measures, aggregations = [], []
    for i, (op, field) in enumerate(chosen):
        fraction, alias = None, ""
        if op == "PERCENTILE":
            if draw(st.booleans()):
                fraction = draw(st.sampled_from(sorted(FRACTIONS)))
            else:
                fraction, alias = draw(st.floats(0, 1)), f"q{i}"
        default = f"p{FRACTIONS[fraction]}_{field}" if op == "PERCENTILE" and not alias else (
            f"{op.lower()}_{field}" if field else op.lower())
        if not alias and any(m[0] == default for m in measures):
            alias = f"again{i}"
        measures.append((alias or default, op, field, fraction))
        aggregations.append(aggregation(op, field, alias=alias, **({} if fraction is None else {"fraction": fraction})))
    time = None
    if draw(st.booleans()):
        field = "created_at" if rollup else draw(st.sampled_from(["created_at", "completed_at"]))
        time = (field, draw(st.sampled_from(list(UNITS))), draw(st.sampled_from(WHOLE_HOUR_ZONES if rollup else ZONES)))
    condition = draw(st.one_of(st.none(), filters(endpoints, versions, rollup)))
    orderable = ([BUCKET_START] if time else []) + group_by
    orderable += [alias for alias, op, field, _ in measures if op in EXACT_OPS or (op == "SUM" and field == "latency")]
    order = draw(st.lists(st.sampled_from(orderable), unique=True, max_size=3)) if orderable else []
    order = [(name, draw(st.booleans())) for name in order]
    limit = draw(st.sampled_from([0, 0, 0, 1, 3, 10]))
    ids = ", ".join(f'"{endpoint}"' for endpoint in endpoints)
    scope = f"endpoint_id IN ({ids})"
    request = common_pb2.StatsRequest(
        filter=scope + (f" AND ({condition[0]})" if condition else ""),
        group_by=group_by,
        aggregations=aggregations,
        order_by=", ".join(f"{name} {'desc' if desc else 'asc'}" for name, desc in order),
        limit=limit,
    )
    if time:
        request.time_bucket.CopyFrom(bucket(*time))
    return {
        "request": request,
        "predicate": condition[1] if condition else (lambda row: True),
        "group_by": group_by,
        "measures": measures,
        "bucket": time,
        "order": order,
        "limit": limit,
    }


def close(one: Any, other: Any) -> bool:
    """Equal, numbers to rounding (the database and Python add and divide in other orders)."""
    if isinstance(one, float) and isinstance(other, float):
        return math.isclose(one, other, rel_tol=1e-9, abs_tol=1e-12)
    return one == other


def assert_matches(got: list[dict[str, Any]], expected: list[dict[str, Any]], request: Any) -> None:
    assert [(g["bucket_start"], g["keys"]) for g in got] == [(g["bucket_start"], g["keys"]) for g in expected], request
    for one, other in zip(got, expected):
        same = one["values"].keys() == other["values"].keys() and all(
            close(value, other["values"][name]) for name, value in one["values"].items()
        )
        assert same, (one, other, request)


@pytest.mark.slow
def test_random_requests_match_the_reference(api, fleet):
    ran = {"rollup": 0, "raw": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(spec=requests(tuple(fleet["endpoints"]), tuple(fleet["versions"])))
    def check(spec: dict[str, Any]) -> None:
        request = spec["request"]
        got = groups(api.stub("Prediction").GetPredictionStats(request))
        assert_matches(got, reference(fleet["rows"], spec), request)
        with models.database.connection_context():
            plan = plan_of(RESOURCES["Prediction"], request, Limits())
            ran["rollup" if rollup_source(plan) is not None else "raw"] += 1

    check()
    assert ran["rollup"] + ran["raw"] >= EXAMPLES
    assert min(ran.values()) >= EXAMPLES // 5, ran


def test_the_reference_buckets_as_postgresql_does(database_url):
    """The bucket rule above, checked against PostgreSQL itself on the hardest instants."""
    instants = sorted({t + datetime.timedelta(minutes=m) for t in anchors() for m in (-90, -61, -30, 0, 29, 30, 61)})
    with models.database.connection_context():
        for unit in UNITS.values():
            for zone in ZONES:
                found = models.database.execute_sql(
                    "SELECT date_trunc(%s, t, %s) FROM unnest(%s::timestamptz[]) AS t", (unit, zone, instants)
                ).fetchall()
                expected = [bucket_start(t, unit, zone) for t in instants]
                assert [row[0] for row in found] == expected, (unit, zone)
