"""Back up and restore the service's database with ``pg_dump`` and ``pg_restore``.

    python -m server.backup dump [FILE]    # make backup: backups/versatil-20260501T120000Z.dump
    python -m server.backup restore FILE   # make restore FILE=backups/versatil-....dump

The database is the one the server would use: ``DATABASE_URL``, or the embedded
PostgreSQL in ``VERSATIL_DATA_DIR`` when it is unset. Dumps are PostgreSQL's
custom format (``pg_dump -Fc``: compressed, restorable selectively with
``pg_restore``), written by default into ``VERSATIL_BACKUP_DIR`` under a UTC
timestamp. A restore replaces every object the dump holds (``--clean
--if-exists``) in one transaction, so a restore that fails changes nothing; stop
the server first, or it may wait on the restore's locks meanwhile. Roles are
not in a dump: on a new cluster, ``make migrate`` first creates those the
dump's grants and policies name.

The client programs are those the embedded PostgreSQL 18 ships, which can dump
any server from 9.2 on; a different pair can be named with ``VERSATIL_PG_BIN``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

from server.ops import database as db
from server.config import Settings


def bin_dir() -> Path:
    """Where ``pg_dump`` and ``pg_restore`` are: ``VERSATIL_PG_BIN``, or the embedded server's."""
    if os.environ.get("VERSATIL_PG_BIN"):
        return Path(os.environ["VERSATIL_PG_BIN"])
    from pgserver._commands import POSTGRES_BIN_PATH  # The programs shipped beside the server.

    return Path(POSTGRES_BIN_PATH)


def default_path(backup_dir: Path, now: datetime.datetime | None = None) -> Path:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return backup_dir / f"versatil-{now.strftime('%Y%m%dT%H%M%SZ')}.dump"


def dump(url: str, path: Path) -> Path:
    """Write the whole database at ``url`` into ``path`` (custom format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # Never leave a truncated dump under the real name.
    _run("pg_dump", "--format=custom", f"--file={partial}", f"--dbname={url}")
    partial.replace(path)
    return path


def restore(url: str, path: Path) -> None:
    """Replace the database at ``url`` with the contents of the dump ``path``, all or nothing."""
    if not path.is_file():
        raise FileNotFoundError(f"no such backup: {path}")
    try:
        _run("pg_restore", "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
             f"--dbname={url}", str(path))
    except BackupFailed as error:
        if re.search(r'role ".*" does not exist', str(error)):
            raise BackupFailed(f"{error}\nThe dump grants to the service's cluster-wide roles: "
                               "run `make migrate` on this database first, which creates them.") from None
        raise


def _run(program: str, *args: str) -> None:
    result = subprocess.run([str(bin_dir() / program), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupFailed(f"{program} failed ({result.returncode}): {result.stderr.strip()}")


class BackupFailed(RuntimeError):
    """``pg_dump`` or ``pg_restore`` exited with an error."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.backup", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dump", help="write a backup (default: VERSATIL_BACKUP_DIR/versatil-<UTC time>.dump)") \
        .add_argument("file", nargs="?", type=Path)
    commands.add_parser("restore", help="replace the database with a backup").add_argument("file", type=Path)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    url = db.database_url(settings)
    try:
        if args.command == "dump":
            print(f"backup written: {dump(url, args.file or default_path(settings.backup_dir))}")
        else:
            restore(url, args.file)
            print(f"restored {args.file}")
    except (BackupFailed, FileNotFoundError) as error:
        print(f"versatil: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
