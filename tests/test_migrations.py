"""The migrations build exactly the schema ``models.py`` declares, and can be undone.

Each test works in a database of its own on the session's embedded PostgreSQL.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from playhouse.migrations import Runner
from playhouse.postgres_ext import PostgresqlExtDatabase
from playhouse.schema_diff import diff_models

import models
from server.ops.database import MIGRATIONS_DIR
from tests.support.ops import peewee_database, scratch_database

pytestmark = pytest.mark.slow

HISTORY_TABLE = "schema_migration"

# One row per column, constraint and index of the public schema, as PostgreSQL
# itself prints them: two databases with equal snapshots have equal schemas.
SNAPSHOT = """
SELECT 'column', table_name || '.' || column_name,
       concat_ws(' ', data_type, udt_name, is_nullable, column_default)
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> %(history)s
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname,
       pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
   AND conrelid::regclass::text <> %(history)s
UNION ALL
SELECT 'index', tablename || '.' || indexname, indexdef
  FROM pg_indexes WHERE schemaname = 'public' AND tablename <> %(history)s
UNION ALL
SELECT 'extension', extname, '' FROM pg_extension WHERE extname = 'vector'
ORDER BY 1, 2, 3
"""


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[PostgresqlExtDatabase]:
    """An empty database beside the session's, dropped afterwards."""
    with scratch_database(database_url) as url:
        database = peewee_database(url)
        try:
            yield database
        finally:
            database.close()


def _snapshot(database: PostgresqlExtDatabase) -> list[tuple[str, str, str]]:
    return database.execute_sql(SNAPSHOT, {"history": HISTORY_TABLE}).fetchall()


def _tables(database: PostgresqlExtDatabase) -> set[str]:
    return set(database.get_tables()) - {HISTORY_TABLE}


def test_migrations_build_what_models_declare(database_url: str, fresh_database: PostgresqlExtDatabase) -> None:
    migrated = peewee_database(database_url)
    with migrated.bind_ctx(models.ALL_MODELS):
        assert not diff_models(migrated, list(models.ALL_MODELS)), "Peewee's schema diff found drift"
        from_migrations = _snapshot(migrated)
    migrated.close()

    fresh_database.execute_sql("CREATE EXTENSION vector")
    with fresh_database.bind_ctx(models.ALL_MODELS):
        fresh_database.create_tables(models.ALL_MODELS)
        from_models = _snapshot(fresh_database)

    missing = sorted(set(from_models) - set(from_migrations))
    extra = sorted(set(from_migrations) - set(from_models))
    assert (missing, extra) == ([], []), "migrations and models.py disagree"
    assert len(from_models) > 100  # The snapshot really covers the schema.


def test_migrations_go_down_and_up_again(fresh_database: PostgresqlExtDatabase) -> None:
    runner = Runner(fresh_database, directory=str(MIGRATIONS_DIR))
    every = [m.name for m in runner.migrations()]
    assert runner.up() == every
    built = _snapshot(fresh_database)
    assert {f"{m._meta.table_name}" for m in models.ALL_MODELS} <= _tables(fresh_database)

    assert runner.down(every[0]) == list(reversed(every))
    assert _tables(fresh_database) == set()
    assert all(m.applied is None for m in runner.status())

    assert runner.up() == every
    assert _snapshot(fresh_database) == built


def test_first_migration_stores_a_page_token_key(fresh_database: PostgresqlExtDatabase) -> None:
    Runner(fresh_database, directory=str(MIGRATIONS_DIR)).up()
    (key,) = fresh_database.execute_sql(
        "SELECT value FROM service_settings WHERE key = 'page_token_key'"
    ).fetchone()
    assert len(key) == 64
