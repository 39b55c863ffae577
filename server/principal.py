"""Who is calling: the authenticated caller of the RPC running in this context.

The authentication layer (``server.auth``) sets the caller around each RPC; the
rest of the code reads it:

    caller = principal.current()       # Caller("alice", Role.WRITER), or None
    if principal.sees_everything():    # admin, or no authenticated caller at all
        ...

``None`` means that no authenticated call is running: code outside an RPC
(migrations, seeding, tests reading rows) or a server started with
authentication off (``VERSATIL_AUTH=off``). Such code is not restricted.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum

from server import logs
from server.rules import Record, Rule


class Role(IntEnum):
    """What a caller may do; each role may do everything the roles below it may."""

    READER = 1  # Get, List, BatchGet, Stats, Search, Lineage.
    WRITER = 2  # Also Create, Update, BatchCreate and the custom write RPCs.
    ADMIN = 3  # Also Delete and everything else.

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            known = ", ".join(role.label for role in cls)
            raise ValueError(f"unknown role {text!r} (known: {known})") from None


@dataclass(frozen=True)
class Caller:
    """An authenticated principal and the strongest role its token grants."""

    name: str
    role: Role

    @property
    def admin(self) -> bool:
        return self.role >= Role.ADMIN


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current() -> Caller | None:
    return _caller.get()


def sees_everything() -> bool:
    """Whether the running code may see every principal's rows and every secret."""
    caller = _caller.get()
    return caller is None or caller.admin


@contextmanager
def acting_as(caller: Caller) -> Iterator[Caller]:
    """Run the block as ``caller``; the log line of the RPC names it too."""
    token = _caller.set(caller)
    log_token = logs.principal.set(caller.name)
    try:
        yield caller
    finally:
        logs.principal.reset(log_token)
        _caller.reset(token)


class StampsCreator(Rule):
    """``created_by`` is the caller's principal, whatever the request said.

    The stamp is never taken from the request, not even an admin's (issue 6: a
    client value is ignored on Create), so ``created_by`` always names who really
    wrote the row. Only without an authenticated caller (authentication off) is
    the request's value kept.
    """

    pure = True  # Reads only the record and the caller.

    def on_create(self, record: Record) -> None:
        caller = _caller.get()
        if caller is None:
            return
        record["created_by"] = caller.name
