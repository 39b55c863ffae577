"""What every call gets around its behavior: a pooled connection, its deadline, and retries.

    return run(call, request, context)    # in server.rpc.dispatch's handler

* The call's deadline bounds its SQL: when the deadline passes while a query
  runs, the query is cancelled (psycopg2's ``cancel``), so no statement keeps
  working for a client that has gone. Calls without a deadline pay nothing.
* A transaction that fails on a serialization conflict or a deadlock is run
  again, up to ``MAX_ATTEMPTS`` times with a short random pause; after that
  the call is ABORTED (``server.core.errors``).
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import peewee
import psycopg2.errorcodes as pgcodes

from models import database
from server.core.errors import DeadlineExceeded

MAX_ATTEMPTS = 3
RETRIED = frozenset({pgcodes.SERIALIZATION_FAILURE, pgcodes.DEADLOCK_DETECTED})


def run(behavior: Callable[[Any], Any], request: Any, context: grpc.ServicerContext) -> Any:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the deadline passed before the call could run")
        try:
            with database.connection_context(), _cancelled_at_deadline(context, remaining):
                return behavior(request)
        except peewee.DatabaseError as error:
            if attempt == MAX_ATTEMPTS or getattr(getattr(error, "orig", None), "pgcode", None) not in RETRIED:
                raise
        time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")


@contextmanager
def _cancelled_at_deadline(context: grpc.ServicerContext, remaining: float | None) -> Iterator[None]:
    if remaining is None:
        yield
        return
    connection = database.connection()
    lock = threading.Lock()
    running = True

    def cancel() -> None:
        # gRPC calls this when the call ends, also when its deadline ends it
        # while the query still runs; the lock keeps a late call from
        # cancelling the next query of a connection already back in the pool.
        with lock:
            if running:
                connection.cancel()

    context.add_callback(cancel)
    try:
        yield
    finally:
        with lock:
            running = False
