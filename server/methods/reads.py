"""Reading resources by id, shaped (``read_mask``, ``expand``) and compiled once per shape.

    read(resource, dataset_id)                          # the message; NOT_FOUND if missing
    rows = by_ids(resource, shape).rows(ids=[...])      # rows for ``shape.render``
"""
from __future__ import annotations

import uuid

from google.protobuf.message import Message

from server.core.errors import NotFound
from server.core.prepared import Prepared, Slot, prepared
from server.core.resource import Resource
from server.methods.shaping import Shape, any_of


def by_ids(resource: Resource, shape: Shape) -> Prepared:
    model = resource.model
    return prepared(
        ("by_ids", shape.key),
        lambda: model.select(*shape.select()).where(model.id == any_of(Slot("ids"))),
    )


def read(resource: Resource, resource_id: uuid.UUID, shape: Shape | None = None) -> Message:
    shape = shape or Shape.of(resource)
    rows = by_ids(resource, shape).rows(ids=[str(resource_id)])
    if not rows:
        raise NotFound(resource.name, str(resource_id))
    return shape.render(rows)[0]


def read_many(resource: Resource, ids: list[uuid.UUID], shape: Shape | None = None) -> dict[uuid.UUID, Message]:
    """The resources of ``ids`` that exist, by id."""
    shape = shape or Shape.of(resource)
    rows = by_ids(resource, shape).rows(ids=[str(i) for i in ids])
    return {row["id"]: message for row, message in zip(rows, shape.render(rows))}
