"""Ordering for List and Stats: one ``order_by`` parser, and keyset conditions (AIP-132).

    keys = parse_order_by(resource, "created_at desc, name")   # id is added as the final key
    query.where(after(keys, last_values)).order_by(*(key.sort() for key in keys))

``after`` is what makes a page token's next page ``WHERE (keys) > (last values)``:
any depth costs the same as the first page.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from peewee import Expression, Field, Tuple

from server.core.errors import InvalidArgument
from server.core.resource import Resource


def parse_order_items(text: str, word: str, refusal: Callable[[str], str | None]) -> list[tuple[str, bool]]:
    """``"a desc, b"`` -> ``[("a", True), ("b", False)]``.

    ``word`` names what an item holds in the error message ("field", "name");
    ``refusal(name)`` says why a name may not be ordered by, or None if it may.
    """
    items: dict[str, bool] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        words = item.split()
        direction = words[1].lower() if len(words) == 2 else "asc"
        if len(words) > 2 or direction not in ("asc", "desc"):
            raise InvalidArgument(f"order_by item {item!r} is not '{word} [asc|desc]'", "order_by")
        name = words[0]
        refused = refusal(name)
        if refused:
            raise InvalidArgument(refused, "order_by")
        if name in items:
            raise InvalidArgument(f"order_by names {name!r} twice", "order_by")
        items[name] = direction == "desc"
    return list(items.items())


@dataclass(frozen=True)
class OrderKey:
    name: str
    field: Field
    descending: bool

    def sort(self) -> Any:
        return self.field.desc() if self.descending else self.field.asc()


def parse_order_by(resource: Resource, order_by: str) -> list[OrderKey]:
    """``"created_at desc, name"`` -> keys, with ``id`` as the final tie breaker."""
    items = parse_order_items(
        order_by,
        "field",
        lambda name: None if name in resource.orderable else f"cannot order {resource.name} by {name!r}",
    )
    keys = [OrderKey(name, resource.fields[name], descending) for name, descending in items]
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
