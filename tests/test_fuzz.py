"""Fuzz test: random and malformed requests to every RPC of every service.

For every RPC the server registers, Hypothesis sends

* ``test_garbage_bytes``: bytes that are mostly not a valid request: random bytes, the empty
  message, valid requests truncated or with bytes overwritten, fields with the wrong wire type,
  invalid UTF-8 in string fields, broken varints and lengths, groups, and nesting deeper than the
  protobuf decoder allows;
* ``test_random_messages``: well-formed requests whose field values are drawn from the request's
  descriptor, recursively (unicode, NUL and very long strings, integers at their extremes, NaN and
  infinities, unknown enum numbers, repeated fields of every size up to 1001 items, nested
  messages, Struct/Value, FieldMasks, Timestamps out of range, filters and order_by built from the
  resource's field names, ids of rows that exist or not), either from scratch or as a few changes
  to a request that would succeed.

After every call: the status is never UNKNOWN, INTERNAL or UNIMPLEMENTED; the server still
answers a Get of a row no fuzzed call can touch (and its health check, after each RPC's
examples); and a call that failed left
every table as it was (row counts and the latest ``updated_at`` of the 13 resource tables, the
idempotency keys and the service's bookkeeping tables, read in one query).

The RPCs are read from the generated ``versatil.ml.v1.*_service_pb2`` modules, so RPCs added
later are fuzzed too; ``test_every_served_service_is_fuzzed`` checks them against server
reflection. Runs are reproducible (``derandomize``, no example database); ``FUZZ_SEED=<n>`` draws
other examples. Examples per RPC: ``FUZZ_BYTES_EXAMPLES`` (8) and ``FUZZ_MESSAGE_EXAMPLES`` (20).
The status codes seen, per RPC family,
are printed at the end of the module and written to ``fuzz_report.json`` in pytest's basetemp.
"""
from __future__ import annotations

import base64
import collections
import importlib
import json
import math
import os
import pkgutil
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg2
import pytest
from google.protobuf import message_factory, struct_pb2, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from peewee import ForeignKeyField

import models
from tests.support import RESOURCES, UPDATES, message
import versatil.ml.v1 as package
from versatil.ml.v1 import resources_pb2

pytestmark = pytest.mark.slow

resource_of = RESOURCES.of_model

BYTES_EXAMPLES = int(os.environ.get("FUZZ_BYTES_EXAMPLES", "8"))
MESSAGE_EXAMPLES = int(os.environ.get("FUZZ_MESSAGE_EXAMPLES", "20"))
# Unset: the same examples on every run (derandomize). Set: other examples, the same for one seed.
SEED = os.environ.get("FUZZ_SEED")
CALL_TIMEOUT = 30.0  # Seconds; a call that takes longer is DEADLINE_EXCEEDED, which is allowed.
MAX_REQUEST_CHARS = 6_000_000  # Bounds what one request may hold (the server takes 4 MiB).

NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
# The client gave up waiting: whether the server wrote is not known to it, so not checked.
OUTCOME_UNKNOWN = {grpc.StatusCode.DEADLINE_EXCEEDED}


# --------------------------------------------------------------------------- the RPCs


def registered_rpcs() -> list[MethodDescriptor]:
    """Every RPC of every service declared in a ``versatil.ml.v1.*_service_pb2`` module."""
    rpcs = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.endswith("_service_pb2"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                rpcs.extend(service.methods)
    return rpcs


RPCS = registered_rpcs()


def path_of(rpc: MethodDescriptor) -> str:
    return f"/{rpc.containing_service.full_name}/{rpc.name}"


def resource_of_rpc(rpc: MethodDescriptor) -> str | None:
    name = rpc.containing_service.name.removesuffix("Service")
    return name if name in RESOURCES else None


def family_of(rpc: MethodDescriptor) -> str:
    """``CreateDataset`` -> ``Create<R>``, ``GetModelStats`` -> ``Get<R>Stats``."""
    resource = resource_of_rpc(rpc)
    if resource is None:
        return rpc.name
    return re.sub(rf"{resource}(?=s?(Stats)?$)", "<R>", rpc.name, count=1)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


# --------------------------------------------------------------------------- plan markers
# Strategies draw plans (plain values, dicts and the markers below); ``Builder`` turns a plan into
# a message at call time, when the ids of existing rows are known. Markers keep Hypothesis from
# generating megabytes and print short in a falsifying example.


@dataclass(frozen=True)
class Known:
    """The id of an existing row of ``resource`` (any resource when None)."""

    resource: str | None
    pick: int = 0


@dataclass(frozen=True)
class Long:
    """``unit * count``: a very long string."""

    unit: str
    count: int


@dataclass(frozen=True)
class Many:
    """``count`` copies of ``item`` in a repeated field."""

    item: Any
    count: int


@dataclass(frozen=True)
class Deep:
    """A JSON object nested ``levels`` deep."""

    levels: int


@dataclass(frozen=True)
class Token:
    """A real page token of the resource's List, edited: cut at ``cut``, ``flip`` one character."""

    resource: str
    cut: int | None
    flip: int | None


# --------------------------------------------------------------------------- value strategies

CHARS = st.characters(blacklist_categories=("Cs",))  # Every code point protobuf can carry.
SPECIAL_TEXT = [
    "", " ", "\x00", "a\x00b", "é", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u202e", "\ufeff", "' OR '1'='1", "%", "_", "*",
    "\\", '"', "\n", "${x}", "..", "null", "NaN", "-0", "true",
]
# Mostly lengths around the service's limits; a few beyond the 4 MiB a request may take.
LONG_LENGTHS = [200, 201, 4096, 4097, 70_000] * 3 + [1_000_000, 4_300_000]
LONG = st.builds(Long, st.sampled_from(["a", "é", "\x00", "(", "𝔘", "*"]), st.sampled_from(LONG_LENGTHS))
TEXT = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(CHARS, max_size=30), LONG)

INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
INT_SPECIALS = [0, 1, -1, 2, 5, 10, 11, 99, 100, 101, 384, 385, 999, 1000, 1001, 10_000, 10_001, 2**31 - 1,
                -(2**31), 2**53 + 1, 2**63 - 1, -(2**63)]


def ints(cpp_type: int) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[cpp_type]
    return st.one_of(st.sampled_from([i for i in INT_SPECIALS if low <= i <= high]), st.integers(low, high))


FLOAT_SPECIALS = [0.0, -0.0, 0.5, 1.0, -1.0, 1.0000001, math.nan, math.inf, -math.inf, 1e308, 5e-324, 3.4e38]
DOUBLES = st.one_of(st.sampled_from(FLOAT_SPECIALS), st.floats())
FLOATS = st.one_of(st.sampled_from(FLOAT_SPECIALS), st.floats(width=32))

# Timestamp bounds are 0001-01-01 and 9999-12-31.
TS_SECONDS = st.one_of(
    st.sampled_from([-62135596800, -62135596801, 253402300799, 253402300800, 0, -1, 1_790_000_000,
                     2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
TS_NANOS = st.one_of(st.sampled_from([0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]),
                     st.integers(-(2**31), 2**31 - 1))

JSON_KEYS = st.one_of(st.sampled_from(["secrets", "a", "", "\x00", "a.b", "framework", "nodes", "lr"]),
                      st.text(CHARS, max_size=10))
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), DOUBLES, st.integers(-(2**64), 2**64), st.text(CHARS, max_size=20),
    st.sampled_from(["\x00", "\\u0000", "secret-value"]), LONG,
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_KEYS, inner, max_size=3),
    max_leaves=6,
)
STRUCTS = st.one_of(
    st.dictionaries(JSON_KEYS, JSON, max_size=4),
    st.builds(lambda v: {"secrets": v}, JSON),
    st.builds(Deep, st.sampled_from([5, 30, 32, 33, 34, 40, 200])),
)

FILTER_OPS = ["=", "!=", "<", "<=", ">", ">=", "AND", "OR", "NOT", "IN", "(", ")", ",", "and", "or", "not",
              ":", "~", "==", "-", ".", "*"]


def enum_names() -> list[str]:
    names = []
    for enum in resources_pb2.DESCRIPTOR.enum_types_by_name.values():
        for value in enum.values:
            names.append(value.name)
            names.append(value.name.split("_")[-1])
    return sorted(set(names))


LITERALS = st.one_of(
    st.sampled_from([
        '"x"', '"resnet*"', '"a\\*b"', '"2026-01-01T00:00:00Z"', '"2026-13-45T99:00:00Z"', '"not a time"',
        "1", "-1", "0.5", "1e309", "-1e309", "NaN", "inf", "null", "NULL", "true", "false",
        "99999999999999999999999999", '"unterminated', "'single'", '"\\"', '"\\u0000"', '"\x00"',
        f'"{uuid.UUID(int=1)}"', str(uuid.UUID(int=2)), "(RUNNING, QUEUED)", "()",
    ]),
    st.sampled_from(enum_names()),
    st.text(CHARS, max_size=8).map(json.dumps),
)


def resource_names(resource: str | None) -> list[str]:
    """Field names, relation paths and JSON paths of ``resource`` (of every resource when None)."""
    names: set[str] = set()
    for name in [resource] if resource else list(RESOURCES):
        descriptor = RESOURCES[name].message.DESCRIPTOR
        for field in descriptor.fields:
            names.add(field.name)
            names.add(field.name.upper())
            if field.message_type is not None:
                if field.message_type.full_name == "google.protobuf.Struct":
                    names.update({f"{field.name}.a", f"{field.name}.secrets", f"{field.name}.a.b.c"})
                else:
                    names.update(f"{field.name}.{sub.name}" for sub in field.message_type.fields)
        names.update(RESOURCES[name].relations)
    return sorted(names) + ["*", "", "id.", ".id", "a..b", "__class__", "updated_at.seconds", "x" * 300]


@dataclass
class Context:
    """What a request's strategies need: the RPC's resource and its names."""

    resource: str | None
    names: list[str]

    @classmethod
    def of(cls, rpc: MethodDescriptor) -> Context:
        resource = resource_of_rpc(rpc)
        return cls(resource, resource_names(resource))

    def name(self) -> st.SearchStrategy[Any]:
        return st.one_of(st.sampled_from(self.names), TEXT)

    def filter(self) -> st.SearchStrategy[Any]:
        token = st.one_of(st.sampled_from(self.names), st.sampled_from(FILTER_OPS), LITERALS)
        clause = st.builds(lambda n, op, v: f"{n} {op} {v}", st.sampled_from(self.names),
                           st.sampled_from(FILTER_OPS[:6] + ["IN", "="]), LITERALS)
        return st.one_of(
            st.lists(token, max_size=12).map(" ".join),
            st.builds(str.join, st.sampled_from([" AND ", " OR ", " ", " AND NOT "]),
                      st.lists(clause, min_size=1, max_size=4)),
            st.builds(lambda n, c: "(" * n + c + ")" * n, st.sampled_from([1, 32, 33, 100, 1000, 2000]), clause),
            st.builds(lambda n, c: "NOT " * n + c, st.sampled_from([32, 33, 1000]), clause),
            st.builds(lambda n, c: " AND ".join([c] * n), st.sampled_from([33, 200, 1000]), clause),
            st.builds(lambda n, c: "(" * n + c, st.sampled_from([1, 500, 2000]), clause),
            TEXT,
        )

    def order_by(self) -> st.SearchStrategy[Any]:
        item = st.builds(lambda n, d: n + d, st.sampled_from(self.names),
                         st.sampled_from(["", " asc", " desc", " DESC", " up", " desc desc", ","]))
        return st.one_of(st.lists(item, max_size=4).map(", ".join), TEXT)


def id_fields() -> dict[str, str]:
    """Field names whose values are ids (``dataset_id``, ``training_job_id``) -> the resource they name."""
    keys = {f"{spec.singular}_id": name for name, spec in RESOURCES.items()}
    for spec in RESOURCES.values():
        for name, field in spec.fields.items():
            if isinstance(field, ForeignKeyField):
                keys[name] = resource_of(field.rel_model).name
    return keys


ID_FIELDS = id_fields()
REQUEST_IDS = [str(uuid.UUID(int=n)) for n in (0x1D, 0x2D)]  # Shared ones, so that some repeat.
RESOURCE_MESSAGES = {spec.message.DESCRIPTOR.full_name: name for name, spec in RESOURCES.items()}


def id_strategy(resource: str | None) -> st.SearchStrategy[Any]:
    known = st.builds(Known, st.just(resource), st.integers(0, 20))
    return st.one_of(
        known, known, known,
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: "{%s}" % u),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: f"urn:uuid:{u}"),
        st.sampled_from(["", "0", "not-a-uuid", str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1)),
                         "' OR 1=1 --", "\x00", "00000000-0000-0000-0000-00000000000g", " " + str(uuid.UUID(int=5))]),
        TEXT,
    )


def id_resource(field: FieldDescriptor, owner: Descriptor, context: Context) -> tuple[bool, str | None]:
    """Whether ``field`` holds ids, and of which resource."""
    if field.name in ("id", "ids"):
        return True, RESOURCE_MESSAGES.get(owner.full_name, context.resource)
    if field.name in ID_FIELDS:
        return True, ID_FIELDS[field.name]
    return False, None


def output_only_relation(field: FieldDescriptor, owner: Descriptor) -> bool:
    """A resource's relation field that only ``expand`` fills (not children created inline)."""
    owner_resource = RESOURCE_MESSAGES.get(owner.full_name)
    if owner_resource is None or field.message_type.full_name not in RESOURCE_MESSAGES:
        return False
    return field.name not in RESOURCES[owner_resource].children


class Strategies:
    """Plan strategies for the messages of one RPC, built from descriptors and cached."""

    # Request -> resource -> inline child: deeper relation fields are output only and cost time.
    MAX_DEPTH = 2

    def __init__(self, rpc: MethodDescriptor) -> None:
        self.rpc = rpc
        self.context = Context.of(rpc)
        self._cache: dict[tuple[str, int], st.SearchStrategy[Any]] = {}
        self._request_strategy: st.SearchStrategy[Any] | None = None
        self._garbage_strategy: st.SearchStrategy[Garbage] | None = None

    def message(self, descriptor: Descriptor, depth: int = MAX_DEPTH) -> st.SearchStrategy[Any]:
        key = (descriptor.full_name, depth)
        if key not in self._cache:
            self._cache[key] = st.deferred(lambda: self._message(descriptor, depth))
        return self._cache[key]

    def _message(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Any]:
        name = descriptor.full_name
        if name == "google.protobuf.Struct":
            return STRUCTS
        if name == "google.protobuf.Value":
            return JSON
        if name == "google.protobuf.ListValue":
            return st.lists(JSON, max_size=4)
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            return st.fixed_dictionaries({}, optional={"seconds": TS_SECONDS, "nanos": TS_NANOS})
        if name == "google.protobuf.FieldMask":
            paths = st.lists(self.context.name(), max_size=4) | st.builds(Many, self.context.name(), st.just(1001))
            return st.fixed_dictionaries({}, optional={"paths": paths})
        optional = {}
        for field in descriptor.fields:
            strategy = self.field(field, descriptor, depth)
            if strategy is not None:
                optional[field.name] = strategy
        return st.fixed_dictionaries({}, optional=optional)

    def scalar(self, field: FieldDescriptor, owner: Descriptor) -> st.SearchStrategy[Any]:
        is_id, resource = id_resource(field, owner, self.context)
        if field.type == FieldDescriptor.TYPE_STRING:
            if is_id:
                return id_strategy(resource)
            if field.name == "request_id":
                return st.one_of(st.sampled_from(REQUEST_IDS), st.uuids().map(str), TEXT)
            if field.name == "filter":
                return self.context.filter()
            if field.name == "order_by":
                return self.context.order_by()
            if field.name in ("expand", "group_by", "field", "alias"):
                return self.context.name()
            if field.name == "page_token" and self.context.resource:
                issuer = st.just(self.context.resource) | st.sampled_from(list(RESOURCES))  # Or another List's.
                token = st.builds(Token, issuer, st.none() | st.integers(0, 200), st.none() | st.integers(0, 200))
                forged = st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode())
                return st.one_of(token, token, forged, TEXT)
            if field.name == "time_zone":
                return st.one_of(st.sampled_from(["UTC", "Europe/Paris", "America/St_Johns", "Mars/Base", "UTC+5",
                                                  "+05:00", "EST5EDT", "posix/Europe/Paris", "../../etc/passwd",
                                                  "localtime", "Etc/GMT+14", "Asia/Kathmandu"]), TEXT)
            if field.name == "resource_type":
                return st.one_of(st.sampled_from([*RESOURCES, "dataset", "Workflow ", "LineageNode"]), TEXT)
            return TEXT
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if field.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if field.type == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return st.one_of(st.sampled_from(known), st.sampled_from([-1, max(known) + 1, 2**31 - 1, -(2**31)]),
                             st.integers(-(2**31), 2**31 - 1))
        if field.type == FieldDescriptor.TYPE_FLOAT:
            return FLOATS
        if field.type == FieldDescriptor.TYPE_DOUBLE:
            return DOUBLES
        return ints(field.cpp_type)

    def field(self, field: FieldDescriptor, owner: Descriptor, depth: int) -> st.SearchStrategy[Any] | None:
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if depth <= 0 and not field.message_type.full_name.startswith("google.protobuf."):
                return None
            if output_only_relation(field, owner):  # Ignored by the server: sent, but kept small.
                target = RESOURCE_MESSAGES[field.message_type.full_name]
                related = st.fixed_dictionaries({}, optional={"id": id_strategy(target)})
                return st.lists(related, max_size=2) if field.is_repeated else related
            single = self.message(field.message_type, depth - 1)
            if not field.is_repeated:
                return single
            shallow = self.message(field.message_type, min(depth - 1, 0))
            return st.one_of(
                st.lists(single, max_size=3),
                st.builds(Many, shallow, st.sampled_from([2, 2, 50, 1001])),
            )
        if field.message_type is not None:
            return None  # Only google.protobuf.Struct has a map, and it is drawn as JSON.
        single = self.scalar(field, owner)
        if not field.is_repeated:
            return single
        if field.type == FieldDescriptor.TYPE_FLOAT:  # Embeddings: 384 dimensions, or not.
            return st.one_of(st.lists(FLOATS, max_size=5),
                             st.builds(Many, FLOATS, st.sampled_from([383, 384, 384, 385, 100_000])))
        return st.one_of(st.lists(single, max_size=4), st.builds(Many, single, st.sampled_from([2, 2, 1001])))

    def leaves(self) -> list[tuple[tuple[str, ...], st.SearchStrategy[Any]]]:
        """Paths of the request's fields up to two levels down, with their value strategies."""
        request = self.rpc.input_type
        found = []
        for field in request.fields:
            strategy = self.field(field, request, self.MAX_DEPTH)
            if strategy is None:
                continue
            found.append(((field.name,), strategy))
            child = field.message_type
            if child is not None and not field.is_repeated and not child.full_name.startswith("google.protobuf."):
                for sub in child.fields:
                    sub_strategy = self.field(sub, child, self.MAX_DEPTH - 1)
                    if sub_strategy is not None:
                        found.append(((field.name, sub.name), sub_strategy))
        return found

    def request(self) -> st.SearchStrategy[Any]:
        """A plan: ("random", fields) from scratch, or ("valid+", changes) on a request that succeeds."""
        if self._request_strategy is None:
            self._request_strategy = self._request()
        return self._request_strategy

    def garbage(self) -> st.SearchStrategy[Garbage]:
        if self._garbage_strategy is None:
            self._garbage_strategy = garbage_strategy(self)
        return self._garbage_strategy

    def _request(self) -> st.SearchStrategy[Any]:
        random_plan = self.message(self.rpc.input_type).map(lambda plan: ("random", plan))
        leaves = self.leaves()
        if not leaves:
            return random_plan
        # One strategy per leaf, made once: a flatmap would make (and validate) new ones per draw.
        change = st.one_of(*(st.tuples(st.just(path), strategy) for path, strategy in leaves))
        changed = st.lists(change, max_size=3).map(lambda changes: ("valid+", nest(changes)))
        return st.one_of(changed, random_plan)


def nest(changes: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    for path, value in changes:
        if len(path) == 1:
            plan[path[0]] = value
        else:
            inner = plan.setdefault(path[0], {})
            if isinstance(inner, dict):
                inner[path[1]] = value
    return plan


# --------------------------------------------------------------------------- garbage bytes


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def right_wire_type(field: FieldDescriptor) -> int:
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE):
        return 2
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64):
        return 1
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32):
        return 5
    return 0


def payload(wire_type: int, data: bytes) -> bytes:
    if wire_type == 0:
        return varint(int.from_bytes(data[:9] or b"\x01", "little"))
    if wire_type == 1:
        return (data + bytes(8))[:8]
    if wire_type == 5:
        return (data + bytes(4))[:4]
    if wire_type == 2:
        return varint(len(data)) + data
    return data  # Groups (3, 4) and the undefined wire types 6 and 7: whatever follows.


def deep_nesting(descriptor: Descriptor, levels: int) -> bytes:
    """A chain of ``levels`` nested message fields, each field the first message one of its type."""
    chain = []
    current = descriptor
    for _ in range(levels):
        fields = [f for f in current.fields if f.message_type is not None]
        if not fields:
            break
        field = fields[len(chain) % len(fields)]
        chain.append(field.number)
        current = field.message_type
    data = b""
    for number in reversed(chain):
        data = tag(number, 2) + varint(len(data)) + data
    return data


@dataclass(frozen=True)
class Garbage:
    """Bytes to send, some made at call time from a valid request (``kind`` says how)."""

    kind: str
    data: bytes = b""
    plan: Any = None
    at: int = 0


def garbage_strategy(strategies: Strategies) -> st.SearchStrategy[Garbage]:
    descriptor = strategies.rpc.input_type
    fields = list(descriptor.fields) or [None]
    numbers = [f.number for f in descriptor.fields] + [0, 1, 2**29 - 1, 2**29, 19000, 536870911]

    def wrong_wire(field: FieldDescriptor | None, wire_type: int, data: bytes) -> Garbage:
        number = field.number if field is not None else 1
        if field is not None and wire_type == right_wire_type(field):
            wire_type = (wire_type + 3) % 8
        return Garbage("raw", tag(number, wire_type) + payload(wire_type, data))

    def bad_utf8(field: FieldDescriptor | None, data: bytes) -> Garbage:
        number = field.number if field is not None else 1
        return Garbage("raw", tag(number, 2) + varint(len(data) + 2) + b"\xc3\x28" + data)

    strings = [f for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING] or [None]
    plans = strategies.request()
    return st.one_of(
        st.just(Garbage("raw", b"")),
        st.binary(max_size=200).map(lambda b: Garbage("raw", b)),
        st.builds(Garbage, st.just("truncated"), st.just(b""), plans, st.integers(0, 10_000)),
        st.builds(Garbage, st.just("overwritten"), st.binary(min_size=1, max_size=8), plans, st.integers(0, 10_000)),
        st.builds(wrong_wire, st.sampled_from(fields), st.integers(0, 7), st.binary(max_size=20)),
        st.builds(bad_utf8, st.sampled_from(strings), st.binary(max_size=10)),
        st.builds(lambda n, w, d: Garbage("raw", tag(n, w) + d), st.sampled_from(numbers), st.integers(0, 7),
                  st.sampled_from([b"", b"\xff" * 11, b"\xff" * 10 + b"\x01", varint(2**64 - 1), varint(2**31) + b"ab",
                                   b"\x05abc", b"\x80", b"\x7f" + b"a" * 3])),
        st.sampled_from([10, 60, 99, 100, 101, 150, 5000]).map(lambda n: Garbage("raw", deep_nesting(descriptor, n))),
        st.builds(lambda prefix, data: Garbage("prefixed", data, prefix), plans, st.binary(min_size=1, max_size=40)),
    )


# --------------------------------------------------------------------------- building requests


class Builder:
    """Turns a plan into a request message, resolving the markers against the current rows."""

    def __init__(self, fuzz: Fuzz, rpc: MethodDescriptor) -> None:
        self.fuzz = fuzz
        self.rpc = rpc
        self.budget = MAX_REQUEST_CHARS

    def request(self, plan: Any) -> Message:
        mode, fields = plan
        request = self.fuzz.valid_request(self.rpc) if mode == "valid+" else message_class(self.rpc.input_type)()
        self.fill(request, fields)
        return request

    def scalar(self, value: Any) -> Any:
        if isinstance(value, Known):
            return self.fuzz.family.id_of(value)
        if isinstance(value, Token):
            return self.fuzz.family.token_of(value)
        if isinstance(value, Long):
            count = max(0, min(value.count, self.budget // len(value.unit.encode())))
            self.budget -= count * len(value.unit.encode())
            return value.unit * count
        if isinstance(value, str):
            self.budget -= len(value)
        return value

    def json(self, value: Any) -> Any:
        if isinstance(value, Deep):
            nested: dict[str, Any] = {"leaf": 1}
            for _ in range(value.levels):
                nested = {"a": nested}
            return nested
        if isinstance(value, dict):
            return {str(self.scalar(k)): self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return self.scalar(value)

    def items(self, values: Any) -> list[Any]:
        if isinstance(values, Many):
            return [values.item] * values.count
        return list(values)

    def fill(self, message: Message, plan: dict[str, Any]) -> None:
        full_name = message.DESCRIPTOR.full_name
        if full_name == "google.protobuf.Struct":
            message.Clear()
            message.update(self.json(plan))
            return
        for name, value in plan.items():
            if self.budget <= 0:
                return
            field = message.DESCRIPTOR.fields_by_name[name]
            kind = field.message_type.full_name if field.message_type is not None else None
            if field.is_repeated:
                target = getattr(message, name)
                del target[:]
                if kind is None and isinstance(value, Many):  # Resolved once, repeated within the budget.
                    item = self.scalar(value.item)
                    cost = max(8, len(item) if isinstance(item, str) else 0)
                    count = min(value.count, max(self.budget, 0) // cost)
                    target.extend([item] * count)
                    self.budget -= cost * count
                    continue
                for item in self.items(value):
                    if self.budget <= 0:
                        break
                    if kind is None:
                        target.append(self.scalar(item))
                        self.budget -= 8
                    else:
                        self.fill_message(target.add(), item)
            elif kind is None:
                setattr(message, name, self.scalar(value))
                self.budget -= 8
            else:
                self.fill_message(getattr(message, name), value)

    def fill_message(self, message: Message, value: Any) -> None:
        full_name = message.DESCRIPTOR.full_name
        self.budget -= 8
        if full_name == "google.protobuf.Struct":
            message.Clear()
            message.SetInParent()
            message.update(self.json(value if isinstance(value, (dict, Deep)) else {}))
        elif full_name in ("google.protobuf.Value", "google.protobuf.ListValue"):
            holder = struct_pb2.Struct()
            holder.update({"v": self.json(value)})
            inner = holder.fields["v"]
            message.CopyFrom(inner if full_name == "google.protobuf.Value" else inner.list_value)
        else:
            message.SetInParent()
            self.fill(message, value)

    def garbage(self, garbage: Garbage) -> bytes:
        if garbage.kind == "raw":
            return garbage.data
        valid = self.request(garbage.plan).SerializeToString()
        if garbage.kind == "truncated":
            return valid[: garbage.at % (len(valid) + 1)]
        if garbage.kind == "overwritten":
            at = garbage.at % (len(valid) + 1)
            return valid[:at] + garbage.data + valid[at + len(garbage.data):]
        return valid + garbage.data  # "prefixed": a valid request followed by garbage


# --------------------------------------------------------------------------- the rows fuzzed calls may name


class Family:
    """One row of every resource, each under the others of the family; what a Delete took is made again."""

    def __init__(self, api: Any, connection: Any) -> None:
        self.api = api
        self.connection = connection  # To see which rows are left, without RPCs.
        self.ids: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.stale = True
        self.generation = 0  # Counts rebuilds, which write.

    def ensure(self) -> bool:
        """Make again the rows a call may have deleted; whether any was made."""
        if not self.stale:
            return False
        self.stale = False
        left = self._existing()
        if len(left) == len(RESOURCES):
            return False
        self.ids, self.tokens = self._build(left), {}
        self.generation += 1
        return True

    def _existing(self) -> dict[str, str]:
        if not self.ids:
            return {}
        names = list(self.ids)
        query = " UNION ALL ".join(
            f"SELECT {i}, id::text FROM \"{RESOURCES[name].model._meta.table_name}\" WHERE id = %s"
            for i, name in enumerate(names)
        )
        with self.connection.cursor() as cursor:
            cursor.execute(query, [self.ids[name] for name in names])
            return {names[i]: found for i, found in cursor.fetchall()}

    def _build(self, ids: dict[str, str]) -> dict[str, str]:
        ids = dict(ids)
        pending = [name for name in RESOURCES if name not in ids]
        while pending:
            progress = False
            for name in list(pending):
                spec = RESOURCES[name]
                keys = {
                    key: resource_of(f.rel_model).name for key, f in spec.fields.items() if isinstance(f, ForeignKeyField)
                }
                if all(target in ids for target in keys.values()):
                    ids[name] = self.api.create(name, **{key: ids[target] for key, target in keys.items()}).id
                    pending.remove(name)
                    progress = True
            assert progress, f"cannot order the creation of {pending}"
        return ids

    def id_of(self, known: Known) -> str:
        if known.resource in self.ids:
            return self.ids[known.resource]
        every = sorted(self.ids.values())
        return every[known.pick % len(every)]

    def token_of(self, token: Token) -> str:
        if token.resource not in self.tokens:
            response = self.api.call(token.resource, f"List{token.resource}s", page_size=1)
            self.tokens[token.resource] = response.next_page_token
        text = self.tokens[token.resource]
        if text and token.flip is not None:
            at = token.flip % len(text)
            text = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]
        if token.cut is not None:
            text = text[: token.cut % (len(text) + 1)]
        return text


# --------------------------------------------------------------------------- what the database holds


def snapshot_query() -> str:
    """One statement: the row count and the latest change time of every table a call may write."""
    parts = []
    for model in models.ALL_MODELS:
        table = model._meta.table_name
        fields = model._meta.fields
        latest = next((c for c in ("updated_at", "created_at", "since", "hour") if c in fields), None)
        parts.append(f'(SELECT count(*) FROM "{table}")')
        if latest:
            parts.append(f'(SELECT max("{fields[latest].column_name}")::text FROM "{table}")')
    return "SELECT " + ", ".join(parts)


def snapshot_labels() -> list[str]:
    labels = []
    for model in models.ALL_MODELS:
        table = model._meta.table_name
        labels.append(f"{table}.count")
        if any(c in model._meta.fields for c in ("updated_at", "created_at", "since", "hour")):
            labels.append(f"{table}.latest")
    return labels


# Values that make the top-level fields of custom RPCs valid (DeployModelVersion, GetLineage).
VALID_VALUES: dict[str, Any] = {
    "traffic_split": 100, "machine_type": "n1-standard-2", "min_replicas": 1, "max_replicas": 2,
    "resource_type": "Dataset",
}


class Fuzz:
    """The session's channel, the family of rows, the database snapshot and what was seen."""

    def __init__(self, channel: grpc.Channel, api: Any, database_url: str) -> None:
        self.channel = channel
        self.api = api
        self.connection = psycopg2.connect(database_url)
        self.connection.autocommit = True
        self.family = Family(api, self.connection)
        with self.connection.cursor() as cursor:
            cursor.execute("PREPARE fuzz_snapshot AS " + snapshot_query())
        # (family generation, snapshot) while no call may have written since it was taken.
        self.last: tuple[int, tuple[Any, ...]] | None = None
        self.labels = snapshot_labels()
        self.health = health_pb2_grpc.HealthStub(channel)
        # A row no fuzzed call can name: its Get proves the server still serves.
        self.sentinel = api.create("Workflow").id
        self._callables: dict[str, Any] = {}
        self._strategies: dict[str, Strategies] = {}
        # (kind, family) -> code -> count, and rpc path -> examples
        self.codes: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.examples: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()

    def strategies(self, rpc: MethodDescriptor) -> Strategies:
        if rpc.full_name not in self._strategies:
            self._strategies[rpc.full_name] = Strategies(rpc)
        return self._strategies[rpc.full_name]

    def snapshot(self) -> tuple[Any, ...]:
        with self.connection.cursor() as cursor:
            cursor.execute("EXECUTE fuzz_snapshot")
            return cursor.fetchone()

    def valid_request(self, rpc: MethodDescriptor) -> Message:
        """A request for ``rpc`` that should succeed on the family's rows (empty when unknown)."""
        self.family.ensure()
        ids = self.family.ids
        request = message_class(rpc.input_type)()
        resource = resource_of_rpc(rpc)
        for field in rpc.input_type.fields:
            is_id, named = id_resource(field, rpc.input_type, Context(resource, []))
            if is_id and field.type == FieldDescriptor.TYPE_STRING:  # A row of the family.
                value = ids.get(named or "", ids["Dataset"])  # Unknown resource: GetLineage's Dataset.
                if field.is_repeated:
                    getattr(request, field.name).append(value)
                else:
                    setattr(request, field.name, value)
            elif field.type == FieldDescriptor.TYPE_FLOAT and field.is_repeated:  # Search<R>s' embedding.
                getattr(request, field.name).extend([0.5, -0.25] * (models.EMBEDDING_DIMENSIONS // 2))
            elif field.name in VALID_VALUES:
                setattr(request, field.name, VALID_VALUES[field.name])
        if resource is None:
            return request
        spec = RESOURCES[resource]
        parents = {key: ids[resource_of(f.rel_model).name] for key, f in spec.parents.items()}
        if rpc.name == f"Create{resource}":
            getattr(request, spec.singular).CopyFrom(self.api.sample(resource, **parents))
        elif rpc.name == f"BatchCreate{resource}s":
            for _ in range(2):
                getattr(request.requests.add(), spec.singular).CopyFrom(self.api.sample(resource, **parents))
        elif rpc.name == f"Update{resource}" and resource in UPDATES:
            name, value = UPDATES[resource]
            changed = getattr(request, spec.singular)
            changed.id = ids[resource]
            setattr(changed, name, value)
            request.update_mask.paths.append(name)
        return request

    def call(self, rpc: MethodDescriptor, data: bytes) -> tuple[grpc.StatusCode, str]:
        path = path_of(rpc)
        if path not in self._callables:
            self._callables[path] = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            self._callables[path](data, timeout=CALL_TIMEOUT)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            return error.code(), error.details() or ""

    def check_health(self) -> None:
        health = self.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, health

    def check_serving(self) -> None:
        self.api.stub("Workflow").GetWorkflow(message("GetWorkflowRequest", id=self.sentinel), timeout=10)

    def exchange(self, rpc: MethodDescriptor, kind: str, data: bytes, shown: Callable[[], str]) -> None:
        """Send ``data`` to ``rpc`` and check everything the fuzz test promises."""
        self.family.ensure()
        if self.last is None or self.last[0] != self.family.generation:
            self.last = (self.family.generation, self.snapshot())
        before, self.last = self.last[1], None
        started = time.perf_counter()
        code, details = self.call(rpc, data)
        self.seconds[path_of(rpc)] += time.perf_counter() - started
        self.codes[(kind, family_of(rpc))][code.name] += 1
        self.examples[f"{kind} {path_of(rpc)}"] += 1

        def where() -> str:
            return f"{path_of(rpc)} answered {code.name}: {details[:500]!r}\nrequest ({len(data)} bytes): {shown()}"

        assert code not in NEVER, where()
        if code is grpc.StatusCode.OK and rpc.name.startswith("Delete"):
            self.family.stale = True  # A cascade may have taken the family's rows.
        if code is not grpc.StatusCode.OK and code not in OUTCOME_UNKNOWN:
            after = self.snapshot()
            changed = {label: (b, a) for label, b, a in zip(self.labels, before, after) if a != b}
            assert not changed, f"a failed call wrote: {changed}\n{where()}"
            self.last = (self.family.generation, after)
        self.check_serving()


def show(message: Message | None, data: bytes) -> str:
    """The request for a failure message: as text when it prints, else its bytes in hex."""
    if message is not None and len(data) <= 8_000_000:
        try:
            text = text_format.MessageToString(message, as_one_line=True)
        except Exception:  # Nesting deeper than text_format goes: show the bytes.
            pass
        else:
            return text if len(text) <= 1500 else text[:1500] + f"... ({len(text)} characters)"
    hexed = data.hex()
    return hexed if len(hexed) <= 1500 else hexed[:1500] + "..."


# --------------------------------------------------------------------------- fixtures and tests


@pytest.fixture(scope="module")
def fuzz(channel: grpc.Channel, api: Any, database_url: str, request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    fuzz = Fuzz(channel, api, database_url)
    started = time.perf_counter()
    yield fuzz
    fuzz.connection.close()
    report = {
        "seconds": round(time.perf_counter() - started, 1),
        "examples": dict(sorted(fuzz.examples.items())),
        "codes": {f"{kind} {family}": dict(counts) for (kind, family), counts in sorted(fuzz.codes.items())},
        "slowest_rpcs": {k: round(v, 2) for k, v in fuzz.seconds.most_common(8)},
    }
    (tmp_path_factory.getbasetemp() / "fuzz_report.json").write_text(json.dumps(report, indent=1))
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            calls = sum(fuzz.examples.values())
            reporter.write_line(f"fuzz: {calls} calls in {report['seconds']} s; codes per RPC family:")
            for name, counts in report["codes"].items():
                reporter.write_line(f"  {name:40} {sum(counts.values()):5}  {dict(sorted(counts.items()))}")


@pytest.fixture
def healthy(fuzz: Fuzz) -> Iterator[Fuzz]:
    """The fuzz state; after all the examples of a test the server's health check says SERVING."""
    yield fuzz
    fuzz.check_health()


FUZZ_SETTINGS = settings(
    derandomize=SEED is None,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
    print_blob=False,
)


def reseeded(test: Callable[..., None]) -> Callable[..., None]:
    return seed(int(SEED))(test) if SEED is not None else test


def rpc_id(rpc: MethodDescriptor) -> str:
    return f"{rpc.containing_service.name}.{rpc.name}"


@pytest.mark.parametrize("rpc", RPCS, ids=rpc_id)
@settings(FUZZ_SETTINGS, max_examples=BYTES_EXAMPLES)
@reseeded
@given(data=st.data())
def test_garbage_bytes(healthy: Fuzz, rpc: MethodDescriptor, data: st.DataObject) -> None:
    garbage = data.draw(healthy.strategies(rpc).garbage(), label="bytes")
    healthy.family.ensure()
    raw = Builder(healthy, rpc).garbage(garbage)
    healthy.exchange(rpc, "bytes", raw, lambda: show(None, raw))


@pytest.mark.parametrize("rpc", RPCS, ids=rpc_id)
@settings(FUZZ_SETTINGS, max_examples=MESSAGE_EXAMPLES)
@reseeded
@given(data=st.data())
def test_random_messages(healthy: Fuzz, rpc: MethodDescriptor, data: st.DataObject) -> None:
    plan = data.draw(healthy.strategies(rpc).request(), label="request")
    healthy.family.ensure()
    request = Builder(healthy, rpc).request(plan)
    raw = request.SerializeToString()
    healthy.exchange(rpc, "message", raw, lambda: show(request, raw))


def test_snapshot_sees_every_write(fuzz: Fuzz) -> None:
    """The no-write check can fail: a create, an update and a delete each change the snapshot."""
    fuzz.family.ensure()
    before = fuzz.snapshot()
    created = fuzz.api.create("Workflow")
    after_create = fuzz.snapshot()
    field, value = UPDATES["Workflow"]
    fuzz.api.call("Workflow", "UpdateWorkflow", workflow=message("Workflow", id=created.id, **{field: value}),
                  update_mask={"paths": [field]})
    after_update = fuzz.snapshot()
    fuzz.api.call("Workflow", "DeleteWorkflow", id=created.id)
    after_delete = fuzz.snapshot()
    assert before != after_create != after_update != after_delete


def test_every_served_service_is_fuzzed(channel: grpc.Channel) -> None:
    """Server reflection lists no service of the contract that the fuzz tests above leave out."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    served = {s.name for r in responses for s in r.list_services_response.service}
    ours = {s for s in served if s.startswith(package.__name__ + ".")}
    fuzzed = {rpc.containing_service.full_name for rpc in RPCS}
    assert ours, served
    assert ours <= fuzzed, f"served but not fuzzed: {sorted(ours - fuzzed)}"
    assert fuzzed <= ours, f"declared but not served: {sorted(fuzzed - ours)}"
