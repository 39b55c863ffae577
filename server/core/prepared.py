"""Queries compiled to SQL once, then run many times with new parameters.

Building and compiling a Peewee query costs more than PostgreSQL's own
primary-key read, so the hot queries are built once per shape, with ``Slot``
placeholders where the values that change from call to call go:

    by_id = Prepared.of(lambda: Dataset.select().where(Dataset.id == Slot("id", Dataset.id)))
    rows = by_id.rows(id=some_uuid)          # [{"id": ..., "workflow_id": ...}], keyed by column

A ``Slot`` is a string subclass so that every Peewee field converter passes it
through unchanged while the query compiles; at run time the real value goes
through the converter the slot names.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from peewee import Field, ForeignKeyField, ModelSelect, UUIDField, __exception_wrapper__
from psycopg2.extras import execute_values

from models import database
from server.core.kinds import Kind, kind_of


class Slot(str):
    """A named placeholder for a parameter, converted by ``field.db_value`` when filled."""

    field: Field | None

    def __new__(cls, name: str, field: Field | None = None) -> Slot:
        slot = super().__new__(cls, f"\0slot:{name}")
        slot.slot_name = name
        slot.field = field
        return slot

    def fill(self, values: dict[str, Any]) -> Any:
        value = values[self.slot_name]
        return value if self.field is None or value is None else self.field.db_value(value)


class Prepared:
    """A compiled SELECT: its SQL, its parameters (constants and slots) and its columns."""

    def __init__(self, query: ModelSelect) -> None:
        self.sql, self.params = query.sql()
        self.columns = [(f.column_name, _converter(f)) for f in query._returning or ()]
        self._slots = [i for i, p in enumerate(self.params) if isinstance(p, Slot)]

    def parameters(self, values: dict[str, Any]) -> list[Any]:
        params = list(self.params)
        for i in self._slots:
            params[i] = params[i].fill(values)
        return params

    def execute(self, values: dict[str, Any]) -> None:
        database.execute_sql(self.sql, self.parameters(values))

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """Run a compiled one-row INSERT for many rows, in one statement per thousand rows."""
        head, _ = self.sql.split(" VALUES ", 1)
        template = "(" + ", ".join(["%s"] * len(self.params)) + ")"
        argument_lists = [self.parameters(row) for row in rows]
        with __exception_wrapper__:  # Driver errors become Peewee's, as for every other query.
            execute_values(database.cursor(), head + " VALUES %s", argument_lists, template, page_size=1000)

    def rows(self, **values: Any) -> list[dict[str, Any]]:
        cursor = database.execute_sql(self.sql, self.parameters(values))
        names = [name for name, _ in self.columns]
        converted = [(i, convert) for i, (_, convert) in enumerate(self.columns) if convert is not None]
        rows = []
        for values_of_row in cursor:
            row = dict(zip(names, values_of_row))
            for i, convert in converted:
                row[names[i]] = convert(values_of_row[i])
            rows.append(row)
        return rows


# Kinds psycopg2 already returns as the Python value Peewee would make
# (uuid.UUID, aware datetime, decoded jsonb, int, float, str): no conversion.
_NATIVE = frozenset({Kind.ID, Kind.ENUM, Kind.TEXT, Kind.INTEGER, Kind.NUMBER, Kind.TIMESTAMP, Kind.JSON})


def _converter(field: Field) -> Callable[[Any], Any] | None:
    if isinstance(field, ForeignKeyField) and not isinstance(field.rel_field, UUIDField):
        return field.python_value
    return None if kind_of(field) in _NATIVE else field.python_value


_compiled: dict[Hashable, Prepared] = {}
MAX_COMPILED = 1024


def prepared(key: Hashable, build: Callable[[], ModelSelect]) -> Prepared:
    """The query ``build`` makes, compiled once per ``key`` (which must say all ``build`` depends on)."""
    found = _compiled.get(key)
    if found is None:
        if len(_compiled) >= MAX_COMPILED:
            _compiled.clear()  # Filters are caller-chosen: bound the cache, simply.
        found = _compiled[key] = Prepared(build())
    return found
