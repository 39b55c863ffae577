"""What a column holds, decided once from its Peewee field class.

Codecs, filters, ordering, page tokens and stats all branch on the kind of a
column; they ask ``kind_of`` instead of each testing field classes:

    kind_of(models.Prediction.latency)      # Kind.INTEGER
    kind_of(models.Prediction.endpoint)     # Kind.ID (a foreign key is an id)
"""
from __future__ import annotations

import functools
from enum import StrEnum

from peewee import (
    BigIntegerField,
    BooleanField,
    DoubleField,
    Field,
    ForeignKeyField,
    IntegerField,
    TextField,
    UUIDField,
)
from pgvector.peewee import VectorField
from playhouse.postgres_ext import BinaryJSONField, DateTimeTZField

from models import EnumField


class Kind(StrEnum):
    """The kinds of column; the values are how error messages name them."""

    ID = "id"
    ENUM = "enum"
    TEXT = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    JSON = "JSON"
    EMBEDDING = "embedding"


# Looked up along the field class's MRO, most specific first (an EnumField is a TextField).
_KINDS: dict[type[Field], Kind] = {
    EnumField: Kind.ENUM,
    ForeignKeyField: Kind.ID,
    UUIDField: Kind.ID,
    DateTimeTZField: Kind.TIMESTAMP,
    BooleanField: Kind.BOOLEAN,
    IntegerField: Kind.INTEGER,
    BigIntegerField: Kind.INTEGER,
    DoubleField: Kind.NUMBER,
    BinaryJSONField: Kind.JSON,
    VectorField: Kind.EMBEDDING,
    TextField: Kind.TEXT,
}
# Kinds with no order a filter, an order_by or a range could use.
UNORDERED = frozenset({Kind.ID, Kind.ENUM, Kind.JSON, Kind.EMBEDDING})
# Kinds a filter or order_by may not name at all (only through a JSON key, for JSON).
OPAQUE = frozenset({Kind.JSON, Kind.EMBEDDING})


def kind_of(field: Field) -> Kind:
    return _kind_of_class(type(field))


@functools.cache
def _kind_of_class(field_class: type[Field]) -> Kind:
    for base in field_class.__mro__:
        if base in _KINDS:
            return _KINDS[base]
    raise LookupError(f"no kind for {field_class.__name__}")
