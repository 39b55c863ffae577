"""Database connections: the embedded PostgreSQL, the pool and the migration runner.

    settings = Settings.from_env()
    url = database_url(settings)          # starts the embedded server if needed
    connect(url, settings)                # binds models.database to a pool
    with models.database.connection_context():
        ...

Every connection the pool hands out runs as the caller of the RPC on its thread
(``run_as_caller``): the database role that row-level security knows, and the
principal's name in ``versatil.principal``.

Migrations never run silently against a shared database: ``prepare_schema`` applies
pending migrations only to the embedded one and otherwise refuses to serve a
schema that is behind (``make migrate`` applies them).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg2
import psycopg2.extensions
from playhouse.migrations import Runner

import models
from server.core import principal
from server.config import Settings
from server.core.principal import Caller

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
EMBEDDED_DATABASE = "versatil"

log = logging.getLogger(__name__)


class SchemaBehind(RuntimeError):
    """The database lacks migrations this code needs."""


def start_embedded(data_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir`` and return its URL.

    The server stops when the last process that started it exits.
    """
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir at import; on servers
        # without XDG_RUNTIME_DIR it falls back to /tmp and says so.
        warnings.simplefilter("ignore")
        import pgserver  # Imported lazily: only embedded mode needs it.

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir.resolve() / "pg"), cleanup_mode="stop")
    admin = psycopg2.connect(server.get_uri())
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{database}"')
    finally:
        admin.close()
    return server.get_uri(database=database)


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL of ``data_dir`` now instead of when this process exits."""
    import pgserver

    server = pgserver.get_server(str(data_dir.resolve() / "pg"), cleanup_mode="stop")
    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def database_url(settings: Settings) -> str:
    return settings.database_url or start_embedded(settings.data_dir)


def connect(url: str, settings: Settings | None = None) -> None:
    """Bind ``models.database`` to a connection pool on ``url``, its connections run as the caller."""
    settings = settings or Settings()
    params = psycopg2.extensions.parse_dsn(url)
    models.database.init(
        params.pop("dbname"),
        **params,
        connection_factory=SessionConnection,
        max_connections=settings.pool_size,
        timeout=settings.pool_timeout,
        stale_timeout=300,
    )
    models.database.on_checkout = run_as_caller


# The database roles of RPCs (migration 0005): neither is a superuser nor bypasses row-level
# security. Code outside an RPC keeps the connecting role ("none" resets to it).
APP_ROLE = "versatil_app"
ADMIN_ROLE = "versatil_admin"
_SESSION = "SELECT set_config('role', %s, false), set_config('versatil.principal', %s, false)"
CONNECTING_ROLE = ("none", "")


class SessionConnection(psycopg2.extensions.connection):
    """A connection that remembers the (role, principal) it runs as, so that setting them
    again costs nothing. Kept on the connection itself: one thread uses it at a time."""

    session: tuple[str, str] = CONNECTING_ROLE


def session_of(caller: Caller | None) -> tuple[str, str]:
    """The database role and ``versatil.principal`` setting a call by ``caller`` runs with."""
    if caller is None:
        return CONNECTING_ROLE
    return (ADMIN_ROLE if caller.admin else APP_ROLE, caller.name)


def run_as_caller() -> None:
    """Make the connection just checked out run as the current caller; no round trip if it already does."""
    connection = models.database.connection()
    wanted = session_of(principal.current())
    if connection.session == wanted:
        return
    connection.session = CONNECTING_ROLE  # Unknown until the statement succeeds.
    models.database.execute_sql(_SESSION, wanted)  # Autocommit: the settings last until changed.
    connection.session = wanted


def migration_runner() -> Runner:
    return Runner(models.database, directory=str(MIGRATIONS_DIR))


def pending_migrations() -> list[str]:
    with models.database.connection_context():
        return [m.name for m in migration_runner().status() if m.applied is None]


def apply_migrations() -> list[str]:
    with models.database.connection_context():
        return migration_runner().up()


def prepare_schema(settings: Settings) -> None:
    """Bring the embedded schema up to date; refuse a shared one that is behind."""
    if settings.embedded:
        for name in apply_migrations():
            log.info("applied migration %s", name)
        return
    pending = pending_migrations()
    if pending:
        raise SchemaBehind(
            f"the database schema is behind: {len(pending)} pending migration(s) "
            f"({', '.join(pending)}); run `make migrate` to apply them"
        )
