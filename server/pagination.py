"""Ordering and keyset page tokens for List methods (AIP-132, AIP-158).

A page token carries the sort-key values of the last row served, signed with
a key every replica shares and bound to the filter and order_by it was issued
for. The next page is ``WHERE (keys) > (last values)``, so any depth costs the
same as the first page and rows inserted meanwhile cause no gaps or duplicates.

    order = parse_order_by(resource, "created_at desc, name")
    query = query.where(after(order, tokens.read(token, binding))).order_by(*sort_by(order))
"""
from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import operator
import uuid
from dataclasses import dataclass
from functools import reduce
from typing import Any

from peewee import Expression, Field, Tuple, UUIDField
from playhouse.postgres_ext import DateTimeTZField

from server.errors import InvalidArgument
from server.resources import Resource

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", "page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class OrderKey:
    name: str
    field: Field
    descending: bool

    def sort(self) -> Any:
        return self.field.desc() if self.descending else self.field.asc()


def parse_order_by(resource: Resource, order_by: str) -> list[OrderKey]:
    """``"created_at desc, name"`` -> keys, with ``id`` as the final tie breaker."""
    keys: list[OrderKey] = []
    for item in filter(None, (part.strip() for part in order_by.split(","))):
        words = item.split()
        direction = words[1].lower() if len(words) == 2 else "asc"
        if len(words) > 2 or direction not in ("asc", "desc"):
            raise InvalidArgument(f"order_by item {item!r} is not 'field [asc|desc]'", "order_by")
        name = words[0]
        if name not in resource.orderable:
            raise InvalidArgument(f"cannot order {resource.name} by {name!r}", "order_by")
        if any(key.name == name for key in keys):
            raise InvalidArgument(f"order_by names {name!r} twice", "order_by")
        keys.append(OrderKey(name, resource.fields[name], direction == "desc"))
    if any(key.name == "id" for key in keys):
        return keys
    return [*keys, OrderKey("id", resource.fields["id"], False)]


def after(keys: list[OrderKey], values: list[Any]) -> Expression:
    """Rows strictly after ``values`` in the order of ``keys`` (NULLs as PostgreSQL sorts them)."""
    if len({key.descending for key in keys}) == 1 and not any(v is None for v in values) and not any(
        key.field.null for key in keys
    ):
        # One row comparison: the form a composite index serves directly.
        left = Tuple(*(key.field for key in keys))
        right = Tuple(*(key.field.to_value(v) for key, v in zip(keys, values)))
        return left < right if keys[0].descending else left > right
    clauses = []
    for i, key in enumerate(keys):
        step = _strictly_after(key, values[i])
        if step is not None:
            ties = [_equal(k, v) for k, v in zip(keys[:i], values[:i])]
            clauses.append(reduce(operator.and_, [*ties, step]))
    expanded = reduce(operator.or_, clauses)
    first, value = keys[0], values[0]
    if first.field.null or value is None:
        return expanded
    # A range on the first key, implied by the OR above, lets an index on it
    # start the scan at the cursor instead of at the beginning.
    return (first.field <= value if first.descending else first.field >= value) & expanded


def _strictly_after(key: OrderKey, value: Any) -> Expression | None:
    # PostgreSQL puts NULLs last when ascending and first when descending.
    column = key.field
    if key.descending:
        return column.is_null(False) if value is None else column < value
    if value is None:
        return None
    return (column > value) | column.is_null() if column.null else column > value


def _equal(key: OrderKey, value: Any) -> Expression:
    return key.field.is_null() if value is None else key.field == value


def _encode_value(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, uuid.UUID)):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    return value


def _decode_value(field: Field, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(field, DateTimeTZField):
        return datetime.datetime.fromisoformat(value)
    if isinstance(field, UUIDField):
        return uuid.UUID(value)
    return value


class PageTokens:
    """Issues and checks signed page tokens."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def binding(resource: Resource, filter_text: str, order_by: str) -> str:
        """What a token is valid for: the same resource, filter and order_by."""
        return hashlib.sha256(f"{resource.name}\0{filter_text}\0{order_by}".encode()).hexdigest()[:16]

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def issue(self, keys: list[OrderKey], row: dict[str, Any], binding: str) -> str:
        values = [_encode_value(row[key.name]) for key in keys]
        payload = json.dumps({"b": binding, "v": values}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload + self._sign(payload)).decode().rstrip("=")

    def read(self, token: str, keys: list[OrderKey], binding: str) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidArgument("page_token is malformed", "page_token") from None
        payload, signature = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidArgument("page_token is not one this service issued", "page_token")
        content = json.loads(payload)
        if content["b"] != binding or len(content["v"]) != len(keys):
            raise InvalidArgument(
                "page_token was issued for a different filter or order_by", "page_token"
            )
        return [_decode_value(key.field, value) for key, value in zip(keys, content["v"])]
