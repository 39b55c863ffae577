"""Helpers for the operations suites: scratch databases and ``python -m server`` as a child process.

    with scratch_database(database_url) as url:
        migrate(url)
        with ServerProcess({"DATABASE_URL": url}) as server:
            server.wait_for(r"serving on")
            ...

A child server is stopped by its pid: SIGTERM (its graceful path), then SIGKILL
if it does not exit. Its stderr and stdout are read by threads into lists, so a
chatty server never blocks on a full pipe.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import grpc
import psycopg2
import psycopg2.extensions
from playhouse.postgres_ext import PostgresqlExtDatabase

from tests.support import ADMIN_TOKEN, ROOT, authorized


def admin(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` in autocommit; the rows of the last one that returns any."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    rows: list[Any] = []
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                if cursor.description is not None:
                    rows = cursor.fetchall()
    finally:
        connection.close()
    return rows


def url_of(database_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``database_url``."""
    params = psycopg2.extensions.parse_dsn(database_url)
    return f"postgresql://{params['user']}@/{name}?host={params['host']}"


@contextmanager
def scratch_database(database_url: str) -> Iterator[str]:
    """An empty database beside ``database_url``'s, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield url_of(database_url, name)
    finally:
        admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def peewee_database(url: str) -> PostgresqlExtDatabase:
    """A Peewee database of its own on ``url``, apart from the pool the service uses."""
    params = psycopg2.extensions.parse_dsn(url)
    return PostgresqlExtDatabase(params.pop("dbname"), **params)


@contextmanager
def unreachable(database_url: str, url: str) -> Iterator[None]:
    """The database at ``url`` refuses connections (and loses the ones it had) inside the block."""
    name = psycopg2.extensions.parse_dsn(url)["dbname"]
    admin(
        database_url,
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    try:
        yield
    finally:
        admin(database_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the embedded PostgreSQL that ``VERSATIL_DATA_DIR=data_dir`` runs."""
    return int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL of ``data_dir``, if it runs: it outlives the process that started it."""
    if (data_dir / "pg" / "postmaster.pid").exists():
        try:
            os.kill(postmaster_pid(data_dir), signal.SIGTERM)
        except ProcessLookupError:
            pass


def run_module(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository root, with ``env`` over the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=300,
    )


def migrate(url: str) -> None:
    result = run_module("server.migrate", {"DATABASE_URL": url}, "up")
    assert result.returncode == 0, result.stderr


class ServerProcess:
    """``python -m server`` on a free port; ``env`` is laid over the test's environment."""

    def __init__(self, env: dict[str, str], stderr: int | None = None) -> None:
        self.env = {"VERSATIL_LISTEN": "127.0.0.1:0", "VERSATIL_METRICS_LISTEN": "off", "VERSATIL_DEV_TOKEN": ADMIN_TOKEN,
                    **env}
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._stderr_fd = stderr
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=ROOT, env={**os.environ, **self.env}, text=True,
            stdout=subprocess.PIPE, stderr=self._stderr_fd if self._stderr_fd is not None else subprocess.PIPE,
        )
        self._readers = [threading.Thread(target=self._drain, args=(self.process.stdout, self.stdout_lines), daemon=True)]
        if self._stderr_fd is None:
            self._readers.append(
                threading.Thread(target=self._drain, args=(self.process.stderr, self.stderr_lines), daemon=True)
            )
        for reader in self._readers:
            reader.start()
        if self._stderr_fd is None:
            try:
                self.port = int(self.wait_for(r"serving on [\d.]+:(\d+)")[1])
                # Worker processes may still be binding the port when it is announced.
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as probe:
                    grpc.channel_ready_future(probe).result(timeout=60)
            except BaseException:
                self.stop()  # No __exit__ follows a failed __enter__: the child would outlive the test.
                raise
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()

    @staticmethod
    def _drain(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, pattern: str, timeout: float = 60, start: int = 0) -> re.Match[str]:
        """The first stderr line from ``start`` on that matches ``pattern``, waiting for it."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        while time.monotonic() < deadline:
            lines = self.stderr_lines[seen:]
            for line in lines:
                found = compiled.search(line)
                if found:
                    return found
            seen += len(lines)
            if self.process.poll() is not None and seen == len(self.stderr_lines):
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(self.stderr_lines))

    def channel(self) -> grpc.Channel:
        """A channel that calls as the admin of ``VERSATIL_DEV_TOKEN``."""
        return authorized(grpc.insecure_channel(f"127.0.0.1:{self.port}"))

    def stop(self) -> int:
        """SIGTERM, wait for the exit and the last output; SIGKILL after 30 seconds."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        return code
