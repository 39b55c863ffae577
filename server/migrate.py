"""Apply, revert and inspect schema migrations (``playhouse.migrations``).

    python -m server.migrate status        # what is applied, what is pending
    python -m server.migrate up [TARGET]   # apply pending migrations (make migrate)
    python -m server.migrate down [TARGET] # revert the last one, or back through TARGET
    python -m server.migrate create NAME   # start migrations/NNNN_name.py (make migration)

The database is the one the server would use: ``DATABASE_URL``, or the
embedded PostgreSQL in ``VERSATIL_DATA_DIR`` when it is unset.
"""
from __future__ import annotations

import argparse
import sys

import models
from server import database as db
from server.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.migrate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="list migrations and when each was applied")
    for name, text in (("up", "apply pending migrations"), ("down", "revert migrations")):
        commands.add_parser(name, help=text).add_argument("target", nargs="?")
    commands.add_parser("create", help="write a new numbered migration").add_argument("name")
    args = parser.parse_args(argv)

    if args.command == "create":
        print(db.migration_runner().create(args.name))
        return 0

    settings = Settings.from_env()
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


if __name__ == "__main__":
    sys.exit(main())
