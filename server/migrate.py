"""Apply, revert and inspect schema migrations (``playhouse.migrations``).

    python -m server.migrate status        # what is applied, what is pending
    python -m server.migrate up [TARGET]   # apply pending migrations (make migrate)
    python -m server.migrate down [TARGET] # revert the last one, or back through TARGET
    python -m server.migrate create NAME   # start migrations/NNNN_name.py (make migration)
    python -m server.migrate reset [--force]  # drop the database, re-create it, migrate (make reset)

``reset`` destroys every row. It always may on the embedded database, which is
a developer's own; a ``DATABASE_URL`` database is reset only with ``--force``
(``make reset FORCE=1``), and needs a role allowed to drop and create it.

The database is the one the server would use: ``DATABASE_URL``, or the
embedded PostgreSQL in ``VERSATIL_DATA_DIR`` when it is unset.
"""
from __future__ import annotations

import argparse
import sys

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

import models
from server.ops import database as db
from server.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.migrate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="list migrations and when each was applied")
    for name, text in (("up", "apply pending migrations"), ("down", "revert migrations")):
        commands.add_parser(name, help=text).add_argument("target", nargs="?")
    commands.add_parser("create", help="write a new numbered migration").add_argument("name")
    commands.add_parser("reset", help="drop the database, re-create it and apply every migration").add_argument(
        "--force", action="store_true", help="reset a DATABASE_URL database too, not only the embedded one"
    )
    args = parser.parse_args(argv)

    if args.command == "create":
        print(db.migration_runner().create(args.name))
        return 0

    settings = Settings.from_env()
    if args.command == "reset":
        return reset(settings, force=args.force)
    db.connect(db.database_url(settings), settings)
    with models.database.connection_context():
        runner = db.migration_runner()
        if args.command == "status":
            for migration in runner.status():
                state = migration.applied.isoformat(" ", "seconds") if migration.applied else "pending"
                print(f"{migration.name:40} {state}")
        else:
            done = getattr(runner, args.command)(args.target)
            print(f"{args.command}: {', '.join(done) if done else 'nothing to do'}")
    return 0


def reset(settings: Settings, force: bool = False) -> int:
    """Drop and re-create the database, then migrate it; a shared one only if ``force``."""
    if not settings.embedded and not force:
        print(
            "versatil: refusing to reset the DATABASE_URL database: it is not the embedded one and "
            "every row in it would be lost. Run `make reset FORCE=1` "
            "(python -m server.migrate reset --force) if that is what you want.",
            file=sys.stderr,
        )
        return 2
    url = db.database_url(settings)
    recreate_database(url)
    db.connect(url, settings)
    applied = db.apply_migrations()
    models.database.close_all()
    print(f"reset {psycopg2.extensions.parse_dsn(url)['dbname']}: applied {', '.join(applied) or 'nothing'}")
    return 0


def recreate_database(url: str) -> None:
    """``DROP DATABASE ... WITH (FORCE)`` and ``CREATE DATABASE`` again, from the maintenance database."""
    params = psycopg2.extensions.parse_dsn(url)
    name = sql.Identifier(params["dbname"])
    admin = psycopg2.connect(**{**params, "dbname": "postgres"})
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(name))
    finally:
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
