"""Manage bearer tokens: add, list and revoke them in the tokens file.

    python -m server.tokens add --principal alice --role writer   # prints the token once
    python -m server.tokens list
    python -m server.tokens remove --principal alice

The file is named by ``VERSATIL_TOKENS_FILE`` (or ``--file``); it holds only
salted hashes (``server.rpc.tokens``). A running server reads it again when it
changes, so added and removed tokens take effect without a restart.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.core.principal import Role
from server.rpc.tokens import TOKENS_FILE_VARIABLE, TokensFileError, add, load, remove


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.tokens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=os.environ.get(TOKENS_FILE_VARIABLE) or None,
                        help=f"the tokens file (default: ${TOKENS_FILE_VARIABLE})")
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="create a token, print it once and store its hash")
    adding.add_argument("--principal", required=True, help="who the token authenticates, e.g. alice or ci-pipeline")
    adding.add_argument("--role", required=True, choices=[r.label for r in Role])
    commands.add_parser("list", help="the principals and roles in the file (never a token)")
    removing = commands.add_parser("remove", help="revoke every token of a principal")
    removing.add_argument("--principal", required=True)
    args = parser.parse_args(argv)
    if args.file is None:
        parser.error(f"name the tokens file with --file or {TOKENS_FILE_VARIABLE}")
    try:
        if args.command == "add":
            if not args.principal.strip():
                parser.error("--principal must not be empty")
            print(add(args.file, args.principal, Role.parse(args.role)))
            print(f"added a {args.role} token for {args.principal} to {args.file}; it is shown only this once",
                  file=sys.stderr)
        elif args.command == "list":
            for entry in load(args.file):
                print(entry.principal, ",".join(role.label for role in entry.roles))
        else:
            count = remove(args.file, args.principal)
            print(f"removed {count} token(s) of {args.principal}", file=sys.stderr)
    except TokensFileError as error:
        print(f"versatil: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
