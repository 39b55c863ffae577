"""Keeps ``grpc.health.v1`` in step with the database, and the embedded database alive.

    watch = DatabaseWatch(health_servicer, service_names)   # NOT_SERVING while unreachable
    watch.start()
    keeper = EmbeddedKeeper(data_dir)                       # restarts a dead embedded PostgreSQL
    keeper.start()

Both poll once a second on a daemon thread and stop with ``stop()``. Calls fail
fast with UNAVAILABLE meanwhile (``server.core.errors``), and the pool reconnects by
itself once the database answers again (``server.rpc.dispatch``).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg2

from grpc_health.v1 import health, health_pb2

from models import database

log = logging.getLogger("versatil.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Poller:
    """Calls ``poll`` every ``interval`` seconds on a daemon thread, from ``start`` to ``stop``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.poll()
            except Exception:  # A poller must outlive any one failure.
                log.exception("%s failed", type(self).__name__)

    def poll(self) -> None:
        raise NotImplementedError


class DatabaseWatch(Poller):
    """Sets every service NOT_SERVING while the database does not answer, SERVING when it does.

    It asks on a connection of its own: a pool busy with calls is no sign of a dead database.
    """

    def __init__(self, servicer: health.HealthServicer, names: Iterable[str], interval: float = 1.0) -> None:
        super().__init__(interval)
        self.servicer, self.names = servicer, ["", *names]
        self.serving = True
        self._connection: Any = None

    def database_answers(self) -> bool:
        try:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg2.connect(
                    dbname=database.database, connect_timeout=5, **database.connect_params
                )
                self._connection.autocommit = True
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except psycopg2.Error:
            if self._connection is not None:
                self._connection.close()
            database.close_idle()  # The pool's idle connections are as dead as this one was.
            return False

    def stop(self) -> None:
        super().stop()
        if self._connection is not None:
            self._connection.close()

    def poll(self) -> None:
        serving = self.database_answers()
        if serving != self.serving:
            log.warning("database %s", "answers again" if serving else "does not answer")
            for name in self.names:
                self.servicer.set(name, SERVING if serving else NOT_SERVING)
            self.serving = serving


class EmbeddedKeeper(Poller):
    """Starts the embedded PostgreSQL again when its postmaster has died."""

    def __init__(self, data_dir: Path, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.data_dir = data_dir

    def poll(self) -> None:
        import pgserver
        from pgserver.utils import PostmasterInfo

        pgdata = self.data_dir.resolve() / "pg"
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running():
            return
        log.warning("the embedded PostgreSQL is not running; starting it again")
        server = pgserver.get_server(str(pgdata), cleanup_mode="stop")
        with server._lock:  # pgserver's own inter-process lock around starting.
            server.ensure_postgres_running()
        log.warning("the embedded PostgreSQL is running again")
