"""``created_by``: stamped from the caller, never taken from the request."""
from __future__ import annotations

from server.core import principal
from server.core.rules import Record, Rule


class StampsCreator(Rule):
    """``created_by`` is the caller's principal, whatever the request said.

    Not even an admin's request value is kept, so ``created_by`` always names who
    really wrote the row. Only without an authenticated caller (authentication
    off) is the request's value kept.
    """

    pure = True  # Reads only the record and the caller.

    def on_create(self, record: Record) -> None:
        caller = principal.current()
        if caller is not None:
            record["created_by"] = caller.name
