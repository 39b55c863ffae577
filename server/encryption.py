"""Manage the encryption keys of ``secrets`` values (see ``server.domain.secrets``).

    python -m server.encryption new-key   # prints a key, to put first in VERSATIL_ENCRYPTION_KEYS
    python -m server.encryption rotate    # re-encrypts every stored secret with the newest key
"""
from __future__ import annotations

import argparse
import sys

from server.config import Settings
from server.domain.catalog import build_catalog
from server.domain.secrets import KeyRing, new_key, rotate
from server.ops import database as db
from server.ops import logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.encryption", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new-key", help="print a new random key, to put first in VERSATIL_ENCRYPTION_KEYS")
    commands.add_parser("rotate", help="re-encrypt every stored secret with the first key of VERSATIL_ENCRYPTION_KEYS")
    args = parser.parse_args(argv)
    if args.command == "new-key":
        print(new_key())
        return 0
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    keys = KeyRing.from_texts(settings.encryption_keys)
    if keys.newest is None:
        print("versatil: set VERSATIL_ENCRYPTION_KEYS, the new key first", file=sys.stderr)
        return 2
    db.connect(db.database_url(settings), settings)
    changed = rotate(build_catalog(keys).values())
    print(f"re-encrypted the secrets of {changed} row(s) with key {keys.newest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
