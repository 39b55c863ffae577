"""Partial responses (``read_mask``) and includes (``expand``) for Get, List and BatchGet.

A ``Shape`` says which columns to read and return and which relations to
load. Columns not asked for are not read; each relation level is loaded with
one query for all the rows of the level above, never one query per row:

    shape = Shape.of(resource, read_mask_paths, ["datasets.versions"])
    rows = prepared(key, lambda: resource.model.select(*shape.select())).rows()
    messages = shape.render(rows)      # 1 + 2 queries in all for this shape
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from peewee import Cast, Field, fn

from server.core.codec import EPOCH
from server.core.errors import InvalidArgument
from server.core.prepared import Slot, prepared
from server.core.resource import Resource
from server.core.rules import Rule

MAX_EXPAND_DEPTH = 3


def etag(data: dict[str, Any]) -> str:
    """Changes on every update, because every update moves ``updated_at`` forward (by 1 µs at least)."""
    since = data["updated_at"] - EPOCH
    return format((since.days * 86400 + since.seconds) * 1_000_000 + since.microseconds, "x")


def _readers(resource: Resource) -> tuple[Rule, ...]:
    """The rules of ``resource`` that change rows on their way out (``Rule.on_read``)."""
    readers = _READERS.get(resource)
    if readers is None:
        readers = _READERS[resource] = tuple(r for r in resource.rules if type(r).on_read is not Rule.on_read)
    return readers


_READERS: dict[Resource, tuple[Rule, ...]] = {}


def to_message(
    resource: Resource, data: dict[str, Any], columns: Iterable[str] | None = None, with_etag: bool = True
) -> Message:
    readers = _readers(resource)
    if readers:
        data = dict(data)
        for rule in readers:
            rule.on_read(data)
    message = resource.codec.to_message(data, columns)
    if with_etag:
        message.etag = etag(data)
    return message


def _expand_tree(resource: Resource, paths: Iterable[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        if len(parts) > MAX_EXPAND_DEPTH:
            raise InvalidArgument(f"expand path {path!r} nests deeper than {MAX_EXPAND_DEPTH} levels", "expand")
        node, at = tree, resource
        for part in parts:
            relation = at.relations.get(part)
            if relation is None:
                known = ", ".join(at.relations) or "none"
                raise InvalidArgument(f"{at.name} has no relation {part!r} to expand (it has: {known})", "expand")
            node = node.setdefault(part, {})
            at = relation.target
    return tree


@dataclass(frozen=True)
class Shape:
    """What to read and return for one resource, and the relations to load under it."""

    resource: Resource
    columns: tuple[str, ...]
    etag: bool
    relations: dict[str, Shape] = field(default_factory=dict)

    @classmethod
    def of(cls, resource: Resource, read_mask: Sequence[str] = (), expand: Iterable[str] = ()) -> Shape:
        return cls._build(resource, _columns(resource, read_mask), _expand_tree(resource, expand))

    @classmethod
    def _build(cls, resource: Resource, mask: tuple[tuple[str, ...], bool], tree: dict[str, Any]) -> Shape:
        columns, etag = mask
        relations = {
            name: cls._build(resource.relations[name].target, _columns(resource.relations[name].target, ()), sub)
            for name, sub in tree.items()
        }
        return cls(resource, columns, etag, relations)

    @property
    def key(self) -> tuple[Any, ...]:
        """Everything the shape's queries depend on, for caching their compiled SQL."""
        nested = tuple((name, shape.key) for name, shape in self.relations.items())
        return (self.resource.name, self.columns, self.etag, nested)

    def select(self, *also: Field) -> list[Field]:
        """The model fields to read: the returned ones, plus what ids, etags and relations need."""
        fields = self.resource.fields
        needed = {"id", *self.columns, *(["updated_at"] if self.etag else [])}
        for name in self.relations:
            relation = self.resource.relations[name]
            if not relation.many:
                needed.add(relation.key.column_name)
        needed.update(f.column_name for f in also)
        return [f for name, f in fields.items() if name in needed]

    def render(self, rows: list[dict[str, Any]]) -> list[Message]:
        """Messages for ``rows`` (as read with ``select``), with their relations loaded."""
        messages = [to_message(self.resource, row, self.columns, self.etag) for row in rows]
        for name, shape in self.relations.items():
            shape._attach(self.resource, name, rows, messages)
        return messages

    def _attach(self, source: Resource, name: str, rows: list[dict[str, Any]], messages: list[Message]) -> None:
        relation = source.relations[name]
        target = relation.target.model
        key = relation.key.column_name
        if relation.many:
            owners = [str(row["id"]) for row in rows]
            query = prepared(
                ("children", source.name, name, self.key),
                lambda: target.select(*self.select(relation.key))
                .where(relation.key == any_of(Slot("ids")))
                .order_by(target.created_at, target.id),
            )
            related = query.rows(ids=owners) if owners else []
            children = defaultdict(list)
            for row, child in zip(related, self.render(related)):
                children[row[key]].append(child)
            for row, message in zip(rows, messages):
                getattr(message, name).extend(children[row["id"]])
        else:
            wanted = [str(k) for k in {row[key] for row in rows} - {None}]
            query = prepared(
                ("parents", self.key), lambda: target.select(*self.select()).where(target.id == any_of(Slot("ids")))
            )
            related = query.rows(ids=wanted) if wanted else []
            parents = {row["id"]: parent for row, parent in zip(related, self.render(related))}
            for row, message in zip(rows, messages):
                parent = parents.get(row[key])
                if parent is not None:
                    getattr(message, name).CopyFrom(parent)


def any_of(ids: Slot) -> Any:
    """``= ANY(%s::uuid[])``: one compiled statement serves any number of ids."""
    return fn.ANY(Cast(ids, "uuid[]"))


def _columns(resource: Resource, paths: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """The columns a read mask returns, and whether it returns the etag."""
    if not paths or list(paths) == ["*"]:
        return tuple(resource.fields), True
    unknown = [p for p in paths if p not in resource.fields and p != "etag" and p not in resource.relations]
    if unknown:
        raise InvalidArgument(f"{resource.name} has no field {unknown[0]!r} to read", "read_mask")
    return tuple(name for name in resource.fields if name in paths), "etag" in paths
