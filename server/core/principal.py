"""Who is calling: the authenticated caller of the RPC running in this context.

The dispatch of every RPC (``server.rpc``) sets the caller around it; the rest of
the code reads it:

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
    """Run the block as ``caller``."""
    token = _caller.set(caller)
    try:
        yield caller
    finally:
        _caller.reset(token)
