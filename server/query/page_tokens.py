"""Page sizes and signed keyset page tokens for List methods (AIP-132, AIP-158).

A page token carries the sort-key values of the last row served, signed with
a key every replica shares and bound to the filter and order_by it was issued
for, so rows inserted meanwhile cause no gaps or duplicates:

    binding = tokens.binding(resource, request.filter, request.order_by)
    cursor = tokens.read(request.page_token, keys, binding)      # the last row's key values
    next_page_token = tokens.issue(keys, last_row, binding)
"""
from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import uuid
from typing import Any

from peewee import Field

from server.core.errors import InvalidArgument
from server.core.kinds import Kind, kind_of
from server.core.limits import Limits
from server.core.resource import Resource
from server.query.ordering import OrderKey

DEFAULT_PAGE_SIZE = 50


def page_size(requested: int, limits: Limits) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", "page_size")
    return min(requested or DEFAULT_PAGE_SIZE, limits.max_page_size)


def _encode_value(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, uuid.UUID)):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    return value


def _decode_value(field: Field, value: Any) -> Any:
    if value is None:
        return None
    kind = kind_of(field)
    if kind is Kind.TIMESTAMP:
        return datetime.datetime.fromisoformat(value)
    if kind is Kind.ID:
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
