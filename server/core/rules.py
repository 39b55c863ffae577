"""The hooks through which domain rules join the generic write path.

A resource lists its rules in its declaration (``server.domain.catalog``); the
standard methods call every hook inside the write's transaction, with rows
as dicts keyed by column name (``endpoint_id``, ``status``, ...):

    class StampsCompletion(Rule):
        def on_update(self, before, changes):
            if changes.get("status") == "COMPLETED":
                changes.setdefault("completed_at", utc_now())

A hook rejects a write by raising a ``server.core.errors.ServiceError``. ``on_read`` sees
every row on its way out (``server.methods.shaping.to_message``), to hide or decode values.
"""
from __future__ import annotations

from typing import Any

Record = dict[str, Any]


class Rule:
    """A domain rule of one resource; every hook is optional."""

    # A pure rule reads nothing but the record it is given, so a batch may run
    # it for every item before inserting them all in one statement.
    pure = False

    def on_create(self, record: Record) -> None:
        """Before an insert: ``record`` holds every column, defaults applied; it may be changed."""

    def on_update(self, before: Record, changes: Record) -> None:
        """Before an update: ``changes`` holds the columns being set; more may be added."""

    def after_write(self, before: Record | None, after: Record | None) -> None:
        """After an insert (``before`` is None), update, or delete (``after`` is None)."""

    def on_read(self, record: Record) -> None:
        """Before a row becomes a message: ``record`` holds the columns read, and may be changed.

        It is a copy made for this hook, and only rules that define it cost that copy.
        """
