"""Writing resources: every insert, update and delete goes through here, rules included.

These are typed functions of Python values, for the standard methods and the
domain's custom methods alike; each runs inside the caller's transaction (or
its own, when there is none):

    insert(resource, message)                                  # inline children too
    update(resource, job_id, {"status": "CANCELLED"})          # column -> Python value
    delete(resource, dataset_id, etag="1a2b")
"""
from __future__ import annotations

import datetime
import uuid
from typing import Any

from google.protobuf.message import Message
from peewee import DatabaseError, Value, fn
from uuid6 import uuid7

from models import database, utc_now
from server.core.codec import UNSET
from server.core.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, translate
from server.core.prepared import Prepared, Slot, prepared
from server.core.resource import OUTPUT_ONLY, Resource
from server.core.rules import Record
from server.methods.shaping import etag, to_message


def _next_version(resource: Resource, parent_id: uuid.UUID) -> int:
    """Lock the parent so that concurrent creates under it number one at a time."""
    key = resource.model._meta.fields[resource.numbered_by]
    parent = key.rel_model
    if parent.select(parent.id).where(parent.id == parent_id).for_update().scalar() is None:
        raise FailedPrecondition(f"unknown parent: {key.column_name} {parent_id} does not exist")
    current = resource.model.select(fn.MAX(resource.model.version)).where(key == parent_id).scalar()
    return (current or 0) + 1


def _insert_statement(resource: Resource) -> Prepared:
    model = resource.model
    columns = {f: Value(Slot(name, f), unpack=False) for name, f in resource.fields.items()}
    return prepared(("insert", resource.name), lambda: model.insert(columns).returning())


def new_record(resource: Resource, message: Message, resource_id: uuid.UUID | None = None) -> Record:
    """The row ``message`` creates: checked, defaults applied, numbered, rules applied."""
    values = {k: v for k, v in resource.codec.read(message, resource.writable).items() if v is not UNSET}
    missing = sorted(resource.required - values.keys())
    if missing:
        raise InvalidArgument(f"{missing[0]} is required", missing[0])
    if resource.numbered_by:
        parent_key = resource.model._meta.fields[resource.numbered_by].column_name
        values.setdefault("version", _next_version(resource, values[parent_key]))
    now = utc_now()
    row = resource.model(id=resource_id or uuid7(), created_at=now, updated_at=now)
    _assign(resource, row, values)
    record = resource.record(row.__data__)
    for rule in resource.rules:
        rule.on_create(record)
    return record


def store(resource: Resource, records: list[Record]) -> list[Message]:
    """Insert ``records`` in one statement and return them as messages."""
    statement = _insert_statement(resource)
    if len(records) == 1:
        statement.execute(records[0])
    else:
        statement.insert_many(records)
    for record in records:
        for rule in resource.rules:
            rule.after_write(None, record)
    return [to_message(resource, record) for record in records]


def insert(resource: Resource, message: Message, resource_id: uuid.UUID | None = None) -> Message:
    """Insert ``message`` and the children given inline; return what was stored."""
    record = new_record(resource, message, resource_id)
    (stored,) = store(resource, [record])
    for relation in resource.children:
        child = resource.relations[relation].target
        parent_key = child.parent_key_of(resource)
        for index, child_message in enumerate(getattr(message, relation)):
            prefix = f"{relation}[{index}]"
            given = getattr(child_message, parent_key)
            if given and given != str(record["id"]):
                raise InvalidArgument(
                    f"{parent_key} must be empty or this {resource.name}'s id", f"{prefix}.{parent_key}"
                )
            inline = child_message.__class__()
            inline.CopyFrom(child_message)
            setattr(inline, parent_key, str(record["id"]))
            try:
                getattr(stored, relation).append(insert(child, inline))
            except Exception as error:
                raise translate(error).at(prefix) from None
    return stored


def locked(resource: Resource, resource_id: uuid.UUID) -> Any:
    """The row, locked until the transaction ends; None if there is none."""
    return resource.model.select().where(resource.model.id == resource_id).for_update().first()


def check_etag(resource: Resource, row: Any, given: str) -> None:
    if given and given != etag(row.__data__):
        raise Aborted(f"{resource.name} {row.id} changed since etag {given!r} was read")


def cleared(resource: Resource, name: str) -> Any:
    """What a masked field left unset becomes: NULL, or its default when it has one."""
    field = resource.fields[name]
    if field.null:
        return None
    if field.default is None:
        raise InvalidArgument(f"{name} is required and cannot be cleared", name)
    return field.default() if callable(field.default) else field.default


def _assign(resource: Resource, row: Any, record: Record) -> None:
    for name, value in record.items():
        setattr(row, resource.fields[name].name, value)


def _next_update_time(previous: datetime.datetime) -> datetime.datetime:
    # Strictly later than the last update, so the etag changes even when two
    # updates land within one clock tick.
    return max(utc_now(), previous + datetime.timedelta(microseconds=1))


def change(resource: Resource, row: Any, changes: Record) -> Message:
    """Apply ``changes`` to a locked ``row`` through the resource's rules; the stored result."""
    for name in changes:
        if name in OUTPUT_ONLY or name not in resource.fields:
            raise InvalidArgument(f"{resource.name} has no updatable field {name!r}", name)
    before = resource.record(row.__data__)
    changes = dict(changes)
    for rule in resource.rules:
        rule.on_update(before, changes)
    changes["updated_at"] = _next_update_time(row.updated_at)
    _assign(resource, row, changes)
    row.save(only=[resource.fields[name] for name in changes])
    after = resource.record(row.__data__)
    for rule in resource.rules:
        rule.after_write(before, after)
    return to_message(resource, after)


def update(resource: Resource, resource_id: uuid.UUID, changes: Record, etag: str = "") -> Message:
    """Set ``changes`` (column -> Python value, enums by short name) on one resource."""
    with database.atomic():
        row = locked(resource, resource_id)
        if row is None:
            raise NotFound(resource.name, str(resource_id))
        check_etag(resource, row, etag)
        return change(resource, row, changes)


def delete(resource: Resource, resource_id: uuid.UUID, etag: str = "", allow_missing: bool = False) -> None:
    """Delete one resource and what cascades from it, its rules told."""
    with database.atomic():
        row = locked(resource, resource_id)
        if row is None:
            if allow_missing:
                return
            raise NotFound(resource.name, str(resource_id))
        check_etag(resource, row, etag)
        row.delete_instance()
        for rule in resource.rules:
            rule.after_write(resource.record(row.__data__), None)


def store_locating_failures(resource: Resource, records: dict[int, Record]) -> list[Message]:
    """Store all records in one statement; if it fails, say which item made it fail."""
    try:
        with database.atomic():  # A savepoint: the batch may go on item by item.
            return store(resource, list(records.values()))
    except DatabaseError:
        pass
    stored = []
    for index, record in records.items():
        try:
            with database.atomic():
                stored.extend(store(resource, [record]))
        except Exception as error:
            raise translate(error).at(f"requests[{index}]") from None
    return stored
