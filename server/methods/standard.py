"""The standard methods (AIP-131..135, 231, 233), written once for every resource.

Each takes the ``Resource``, the request message and the process's ``Limits``,
and returns the response message; ``server.rpc`` binds them to the RPCs of every
service and runs each call inside one database connection. They turn requests
into the typed reads and writes of ``server.methods.reads`` and ``.writes``:

    create(catalog["Dataset"], CreateDatasetRequest(dataset=...), limits)
"""
from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from uuid6 import uuid7

from models import database
from server.core.codec import UNSET, parse_uuid, required_uuid
from server.core.errors import InvalidArgument, NotFound, translate
from server.core.limits import Limits
from server.core.prepared import Prepared, Slot, prepared
from server.core.resource import Resource
from server.core.rules import Record
from server.methods import idempotency, writes
from server.methods.reads import read, read_many
from server.methods.shaping import Shape
from server.query.filters import compile_filter
from server.query.ordering import OrderKey, after, parse_order_by
from server.query.page_tokens import PageTokens, page_size


def _create(resource: Resource, request: Message) -> Message:
    message = getattr(request, resource.singular)
    if not request.request_id:
        return writes.insert(resource, message)
    request_id = parse_uuid(request.request_id, "request_id")
    new_id = uuid7()
    earlier = idempotency.claim(resource.name, request_id, idempotency.fingerprint(resource.name, message), new_id)
    return writes.insert(resource, message, new_id) if earlier is None else read(resource, earlier)


def create(resource: Resource, request: Message, limits: Limits) -> Message:
    with database.atomic():
        return _create(resource, request)


def get(resource: Resource, request: Message, limits: Limits) -> Message:
    resource_id = required_uuid(request.id, "id")
    return read(resource, resource_id, Shape.of(resource, request.read_mask.paths, request.expand))


def _page_query(
    resource: Resource, request: Message, limits: Limits, shape: Shape, keys: list[OrderKey], cursor: list[Any] | None
) -> Prepared:
    """The page's SELECT, compiled once per filter, order, shape and kind of cursor."""
    cursor_kind = None if cursor is None else tuple(value is None for value in cursor)

    def build() -> Any:
        query = resource.model.select(*shape.select(*(key.field for key in keys)))
        query = query.where(compile_filter(resource, request.filter, limits))
        if cursor is not None:
            slots = [
                None if value is None else Slot(f"k{i}", key.field) for i, (key, value) in enumerate(zip(keys, cursor))
            ]
            query = query.where(after(keys, slots))
        query = query.order_by(*(key.sort() for key in keys)).limit(Slot("limit"))
        return query.offset(Slot("skip")) if request.skip else query

    return prepared(("page", request.filter, shape.key, tuple(keys), cursor_kind, bool(request.skip)), build)


def list_(resource: Resource, request: Message, limits: Limits, *, tokens: PageTokens) -> Message:
    size = page_size(request.page_size, limits)
    if request.skip < 0:
        raise InvalidArgument("skip must not be negative", "skip")
    keys = parse_order_by(resource, request.order_by)
    shape = Shape.of(resource, request.read_mask.paths, request.expand)
    binding = tokens.binding(resource, request.filter, request.order_by)
    cursor = tokens.read(request.page_token, keys, binding) if request.page_token else None
    values = {f"k{i}": value for i, value in enumerate(cursor or [])}
    query = _page_query(resource, request, limits, shape, keys, cursor)
    rows = query.rows(limit=size + 1, skip=request.skip, **values)
    response = resource.response("List")
    getattr(response, resource.plural).extend(shape.render(rows[:size]))
    if len(rows) > size:
        response.next_page_token = tokens.issue(keys, rows[size - 1], binding)
    if request.show_total_size:
        matching = resource.model.select().where(compile_filter(resource, request.filter, limits))
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


def update(resource: Resource, request: Message, limits: Limits) -> Message:
    message = getattr(request, resource.singular)
    resource_id = required_uuid(message.id, f"{resource.singular}.id")
    paths = _update_paths(resource, message, list(request.update_mask.paths))
    given = resource.codec.read(message, paths)
    with database.atomic():
        row = writes.locked(resource, resource_id)
        if row is None:
            if request.allow_missing:
                return writes.insert(resource, message, resource_id)
            raise NotFound(resource.name, str(resource_id))
        writes.check_etag(resource, row, message.etag)
        changes = {name: writes.cleared(resource, name) if value is UNSET else value for name, value in given.items()}
        return writes.change(resource, row, changes)


def delete(resource: Resource, request: Message, limits: Limits) -> Message:
    writes.delete(resource, required_uuid(request.id, "id"), request.etag, request.allow_missing)
    return empty_pb2.Empty()


def batch_create(resource: Resource, request: Message, limits: Limits) -> Message:
    count = len(request.requests)
    if not 1 <= count <= limits.max_batch:
        raise InvalidArgument(f"requests must hold 1 to {limits.max_batch} items, got {count}", "requests")
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
                fingerprint = idempotency.fingerprint(resource.name, message)
                if request_id in keys:
                    first, first_fingerprint = keys[request_id]
                    if fingerprint != first_fingerprint:
                        raise idempotency.reused()
                    repeats[index] = first
                    continue
                keys[request_id] = (index, fingerprint)
            records[index] = writes.new_record(resource, message)
        except Exception as error:
            raise translate(error).at(f"requests[{index}]") from None

    wanted = {rid: (print_, records[i]["id"]) for rid, (i, print_) in keys.items()}
    earlier = idempotency.claim_many(resource.name, wanted)
    for request_id, (_, fingerprint) in earlier.items():
        index, expected = keys[request_id]
        if fingerprint != expected:
            raise idempotency.reused().at(f"requests[{index}]")
        del records[index]
    results = dict(zip(records, writes.store_locating_failures(resource, records))) if records else {}
    if earlier:
        found = read_many(resource, [resource_id for resource_id, _ in earlier.values()])
        for request_id, (resource_id, _) in earlier.items():
            results[keys[request_id][0]] = found[resource_id]
    return [results[repeats.get(index, index)] for index in range(len(items))]


def batch_get(resource: Resource, request: Message, limits: Limits) -> Message:
    ids = [required_uuid(text, f"ids[{i}]") for i, text in enumerate(request.ids)]
    if len(ids) > limits.max_batch:
        raise InvalidArgument(f"ids must hold at most {limits.max_batch} items", "ids")
    found = read_many(resource, ids, Shape.of(resource, request.read_mask.paths))
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise NotFound(resource.name, ", ".join(dict.fromkeys(missing)))
    response = resource.response("BatchGet")
    getattr(response, resource.plural).extend(found[i] for i in ids)
    return response
