"""The standard methods (AIP-131..135, 231, 233), written once for every resource.

Each function takes a ``Resource`` and the request message and returns the
response message; ``server.routing`` binds them to the RPCs of every service
and runs each call inside one database connection.

    create(RESOURCES["Dataset"], CreateDatasetRequest(dataset=...))
"""
from __future__ import annotations

import datetime
import hashlib
import uuid
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from peewee import DatabaseError, Value, fn
from uuid6 import uuid7

from models import IdempotencyKey, database, utc_now
from server.convert import UNSET, parse_uuid
from server.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, translate
from server.filters import compile_filter
from server.pagination import OrderKey, PageTokens, after, page_size, parse_order_by
from server.prepared import Prepared, Slot, prepared
from server.resources import RESOURCES, Resource
from server.rules import Record
from server.shaping import Shape, any_of, etag, to_message

MAX_BATCH = 1000


def _require_id(text: str, field: str) -> uuid.UUID:
    if not text:
        raise InvalidArgument(f"{field} is required", field)
    return parse_uuid(text, field)


def _next_version(resource: Resource, parent_id: uuid.UUID) -> int:
    """Lock the parent so that concurrent creates under it number one at a time."""
    key = resource.model._meta.fields[resource.numbered_by]
    parent = key.rel_model
    if parent.select(parent.id).where(parent.id == parent_id).for_update().scalar() is None:
        raise FailedPrecondition(f"unknown parent: {key.column_name} {parent_id} does not exist")
    current = (
        resource.model.select(fn.MAX(resource.model.version)).where(key == parent_id).scalar()
    )
    return (current or 0) + 1


def _insert_statement(resource: Resource) -> Prepared:
    model = resource.model
    columns = {f: Value(Slot(name, f), unpack=False) for name, f in resource.fields.items()}
    return prepared(("insert", resource.name), lambda: model.insert(columns).returning())


def _new_record(resource: Resource, message: Message, resource_id: uuid.UUID | None = None) -> Record:
    """The row ``message`` creates: checked, defaults applied, numbered, rules applied."""
    values = {k: v for k, v in resource.codec.read(message, resource.writable).items() if v is not UNSET}
    missing = sorted(resource.required - values.keys())
    if missing:
        raise InvalidArgument(f"{missing[0]} is required", missing[0])
    if resource.numbered_by:
        parent_key = resource.model._meta.fields[resource.numbered_by].column_name
        version = _next_version(resource, values[parent_key])
        values.setdefault("version", version)
    now = utc_now()
    row = resource.model(id=resource_id or uuid7(), created_at=now, updated_at=now)
    _assign(resource, row, values)
    record = resource.record(row.__data__)
    for rule in resource.rules:
        rule.on_create(record)
    return record


def _stored(resource: Resource, records: list[Record]) -> list[Message]:
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
    record = _new_record(resource, message, resource_id)
    (stored,) = _stored(resource, [record])
    for relation, child_name in resource.children.items():
        child = RESOURCES[child_name]
        parent_key = child.parent_key_of(resource)
        for index, child_message in enumerate(getattr(message, relation)):
            prefix = f"{relation}[{index}]"
            given = getattr(child_message, parent_key)
            if given and given != str(record["id"]):
                raise InvalidArgument(f"{parent_key} must be empty or this {resource.name}'s id", f"{prefix}.{parent_key}")
            inline = child_message.__class__()
            inline.CopyFrom(child_message)
            setattr(inline, parent_key, str(record["id"]))
            try:
                getattr(stored, relation).append(insert(child, inline))
            except Exception as error:
                raise translate(error).at(prefix) from None
    return stored


def _fingerprint(resource: Resource, message: Message) -> str:
    return hashlib.sha256(resource.name.encode() + message.SerializeToString(deterministic=True)).hexdigest()


def _create(resource: Resource, request: Message) -> Message:
    message = getattr(request, resource.singular)
    if not request.request_id:
        return insert(resource, message)
    request_id = parse_uuid(request.request_id, "request_id")
    fingerprint = _fingerprint(resource, message)
    new_id = uuid7()
    # Concurrent calls with one request_id wait here on the key's unique index;
    # the loser sees the winner's key once the winner commits.
    claimed = (
        IdempotencyKey.insert(
            request_id=request_id, method=resource.name, fingerprint=fingerprint, resource_id=new_id
        )
        .on_conflict_ignore()
        .execute()
    )
    if claimed is not None:
        return insert(resource, message, new_id)
    first = IdempotencyKey.get_by_id(request_id)
    if first.method != resource.name or first.fingerprint != fingerprint:
        raise InvalidArgument(
            "request_id was already used for a different request", "request_id"
        )
    return _get(resource, first.resource_id)


def create(resource: Resource, request: Message) -> Message:
    with database.atomic():
        return _create(resource, request)


def _by_ids(resource: Resource, shape: Shape) -> Prepared:
    model = resource.model
    return prepared(
        ("by_ids", shape.key),
        lambda: model.select(*shape.select()).where(model.id == any_of(Slot("ids"))),
    )


def _get(resource: Resource, resource_id: uuid.UUID, shape: Shape | None = None) -> Message:
    shape = shape or Shape.of(resource)
    rows = _by_ids(resource, shape).rows(ids=[str(resource_id)])
    if not rows:
        raise NotFound(resource.name, str(resource_id))
    return shape.render(rows)[0]


def get(resource: Resource, request: Message) -> Message:
    resource_id = _require_id(request.id, "id")
    return _get(resource, resource_id, Shape.of(resource, request.read_mask.paths, request.expand))


def _page_query(
    resource: Resource, request: Message, shape: Shape, keys: list[OrderKey], cursor: list[Any] | None
) -> Prepared:
    """The page's SELECT, compiled once per filter, order, shape and kind of cursor."""
    cursor_kind = None if cursor is None else tuple(value is None for value in cursor)

    def build() -> Any:
        query = resource.model.select(*shape.select(*(key.field for key in keys)))
        query = query.where(compile_filter(resource, request.filter))
        if cursor is not None:
            slots = [None if value is None else Slot(f"k{i}", key.field) for i, (key, value) in enumerate(zip(keys, cursor))]
            query = query.where(after(keys, slots))
        query = query.order_by(*(key.sort() for key in keys)).limit(Slot("limit"))
        return query.offset(Slot("skip")) if request.skip else query

    return prepared(("page", request.filter, shape.key, tuple(keys), cursor_kind, bool(request.skip)), build)


def list_(resource: Resource, request: Message, tokens: PageTokens) -> Message:
    size = page_size(request.page_size)
    if request.skip < 0:
        raise InvalidArgument("skip must not be negative", "skip")
    keys = parse_order_by(resource, request.order_by)
    shape = Shape.of(resource, request.read_mask.paths, request.expand)
    binding = tokens.binding(resource, request.filter, request.order_by)
    cursor = tokens.read(request.page_token, keys, binding) if request.page_token else None
    values = {f"k{i}": value for i, value in enumerate(cursor or [])}
    rows = _page_query(resource, request, shape, keys, cursor).rows(limit=size + 1, skip=request.skip, **values)
    response = resource.response("List")
    getattr(response, resource.plural).extend(shape.render(rows[:size]))
    if len(rows) > size:
        response.next_page_token = tokens.issue(keys, rows[size - 1], binding)
    if request.show_total_size:
        matching = resource.model.select().where(compile_filter(resource, request.filter))
        response.total_size = matching.count()
    return response


def _update_paths(resource: Resource, message: Message, mask_paths: list[str]) -> list[str]:
    if not mask_paths:
        given = {descriptor.name for descriptor, _ in message.ListFields()}
        return [name for name in resource.writable if name in given and name not in resource.immutable]
    if mask_paths == ["*"]:
        return [name for name in resource.writable if name not in resource.immutable]
    for path in mask_paths:
        if path in resource.immutable:
            raise InvalidArgument(f"{path} cannot be changed by an update", "update_mask")
        if path not in resource.fields:
            raise InvalidArgument(f"{resource.name} has no updatable field {path!r}", "update_mask")
    return list(dict.fromkeys(mask_paths))


def _next_update_time(previous: datetime.datetime) -> datetime.datetime:
    # Strictly later than the last update, so the etag changes even when two
    # updates land within one clock tick.
    return max(utc_now(), previous + datetime.timedelta(microseconds=1))


def _assign(resource: Resource, row: Any, record: Record) -> None:
    for name, value in record.items():
        setattr(row, resource.fields[name].name, value)


def _cleared(resource: Resource, name: str) -> Any:
    """What a masked field left unset becomes: NULL, or its default when it has one."""
    field = resource.fields[name]
    if field.null:
        return None
    if field.default is None:
        raise InvalidArgument(f"{name} is required and cannot be cleared", name)
    return field.default() if callable(field.default) else field.default


def _check_etag(resource: Resource, row: Any, given: str) -> None:
    if given and given != etag(row.__data__):
        raise Aborted(f"{resource.name} {row.id} changed since etag {given!r} was read")


def update(resource: Resource, request: Message) -> Message:
    message = getattr(request, resource.singular)
    resource_id = _require_id(message.id, f"{resource.singular}.id")
    paths = _update_paths(resource, message, list(request.update_mask.paths))
    given = resource.codec.read(message, paths)
    with database.atomic():
        row = resource.model.select().where(resource.model.id == resource_id).for_update().first()
        if row is None:
            if request.allow_missing:
                return insert(resource, message, resource_id)
            raise NotFound(resource.name, str(resource_id))
        _check_etag(resource, row, message.etag)
        before = resource.record(row.__data__)
        changes = {name: _cleared(resource, name) if value is UNSET else value for name, value in given.items()}
        for rule in resource.rules:
            rule.on_update(before, changes)
        changes["updated_at"] = _next_update_time(row.updated_at)
        _assign(resource, row, changes)
        row.save(only=[resource.fields[name] for name in changes])
        after = resource.record(row.__data__)
        for rule in resource.rules:
            rule.after_write(before, after)
        return to_message(resource, after)


def delete(resource: Resource, request: Message) -> Message:
    resource_id = _require_id(request.id, "id")
    with database.atomic():
        row = resource.model.select().where(resource.model.id == resource_id).for_update().first()
        if row is None:
            if request.allow_missing:
                return empty_pb2.Empty()
            raise NotFound(resource.name, str(resource_id))
        _check_etag(resource, row, request.etag)
        row.delete_instance()
        for rule in resource.rules:
            rule.after_write(resource.record(row.__data__), None)
    return empty_pb2.Empty()


def batch_create(resource: Resource, request: Message) -> Message:
    count = len(request.requests)
    if not 1 <= count <= MAX_BATCH:
        raise InvalidArgument(f"requests must hold 1 to {MAX_BATCH} items, got {count}", "requests")
    response = resource.response("BatchCreate")
    created = getattr(response, resource.plural)
    with database.atomic():
        if _insertable_in_bulk(resource):
            created.extend(_bulk_create(resource, list(request.requests)))
            return response
        for index, item in enumerate(request.requests):
            try:
                created.append(_create(resource, item))
            except Exception as error:
                raise translate(error).at(f"requests[{index}]") from None
    return response


def _insertable_in_bulk(resource: Resource) -> bool:
    """Whether a batch can be one INSERT: no inline children, no numbering, only pure rules."""
    return not resource.children and not resource.numbered_by and all(rule.pure for rule in resource.rules)


def _bulk_create(resource: Resource, items: list[Message]) -> list[Message]:
    """Create a batch with one statement for its request ids and one for its rows.

    A request id seen before returns its first result; one repeated inside the
    batch returns the result of its first occurrence.
    """
    records: dict[int, Record] = {}
    keys: dict[uuid.UUID, tuple[int, str]] = {}  # request id -> (first item, fingerprint)
    repeats: dict[int, int] = {}  # item -> earlier item with the same request id
    for index, item in enumerate(items):
        try:
            message = getattr(item, resource.singular)
            if item.request_id:
                request_id = parse_uuid(item.request_id, "request_id")
                fingerprint = _fingerprint(resource, message)
                if request_id in keys:
                    first, first_fingerprint = keys[request_id]
                    if fingerprint != first_fingerprint:
                        raise InvalidArgument("request_id was already used for a different request", "request_id")
                    repeats[index] = first
                    continue
                keys[request_id] = (index, fingerprint)
            records[index] = _new_record(resource, message)
        except Exception as error:
            raise translate(error).at(f"requests[{index}]") from None

    earlier = _claim(resource, {rid: (fp, records[i]["id"]) for rid, (i, fp) in keys.items()})
    for request_id, (resource_id, fingerprint) in earlier.items():
        index, expected = keys[request_id]
        if fingerprint != expected:
            raise InvalidArgument("request_id was already used for a different request", "request_id").at(
                f"requests[{index}]"
            )
        del records[index]
    results = dict(zip(records, _store_locating_failures(resource, records))) if records else {}
    if earlier:
        found = _by_ids(resource, Shape.of(resource)).rows(ids=[str(rid) for rid, _ in earlier.values()])
        by_id = {row["id"]: message for row, message in zip(found, Shape.of(resource).render(found))}
        for request_id, (resource_id, _) in earlier.items():
            results[keys[request_id][0]] = by_id[resource_id]
    return [results[repeats.get(index, index)] for index in range(len(items))]


def _store_locating_failures(resource: Resource, records: dict[int, Record]) -> list[Message]:
    """Store all records in one statement; if it fails, say which item made it fail."""
    try:
        with database.atomic():  # A savepoint: the batch may go on item by item.
            return _stored(resource, list(records.values()))
    except DatabaseError:
        pass
    stored = []
    for index, record in records.items():
        try:
            with database.atomic():
                stored.extend(_stored(resource, [record]))
        except Exception as error:
            raise translate(error).at(f"requests[{index}]") from None
    return stored


def _claim(resource: Resource, wanted: dict[uuid.UUID, tuple[str, uuid.UUID]]) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    """Claim request ids for new rows; return those already claimed (id -> their resource, fingerprint)."""
    if not wanted:
        return {}
    rows = [
        {"request_id": rid, "method": resource.name, "fingerprint": fp, "resource_id": new_id}
        for rid, (fp, new_id) in wanted.items()
    ]
    claimed = {
        row.request_id
        for row in IdempotencyKey.insert_many(rows).on_conflict_ignore().returning(IdempotencyKey.request_id).execute()
    }
    taken = [rid for rid in wanted if rid not in claimed]
    if not taken:
        return {}
    earlier = IdempotencyKey.select().where(IdempotencyKey.request_id.in_(taken))
    return {
        key.request_id: (key.resource_id, key.fingerprint if key.method == resource.name else "")
        for key in earlier
    }


def batch_get(resource: Resource, request: Message) -> Message:
    ids = [_require_id(text, f"ids[{i}]") for i, text in enumerate(request.ids)]
    if len(ids) > MAX_BATCH:
        raise InvalidArgument(f"ids must hold at most {MAX_BATCH} items", "ids")
    shape = Shape.of(resource, request.read_mask.paths)
    rows = _by_ids(resource, shape).rows(ids=[str(i) for i in ids])
    found = {row["id"]: message for row, message in zip(rows, shape.render(rows))}
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise NotFound(resource.name, ", ".join(dict.fromkeys(missing)))
    response = resource.response("BatchGet")
    getattr(response, resource.plural).extend(found[i] for i in ids)
    return response
