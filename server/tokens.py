"""Bearer tokens: the file that holds their hashes, and the command that adds them.

    python -m server.tokens add --principal alice --role writer   # prints the token once
    python -m server.tokens list
    python -m server.tokens remove --principal alice

The file is named by ``VERSATIL_TOKENS_FILE`` (or ``--file``) and never holds a
token, only a random salt and ``sha256(salt + token)`` for each::

    {"tokens": [{"principal": "alice", "roles": ["writer"], "salt": "9f1c…",
                 "sha256": "<hex of sha256(salt + token)>"}]}

It is written atomically, readable by its owner only. A running server reads it
again when it changes, so added and removed tokens take effect without a
restart.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.principal import Caller, Role

TOKENS_FILE_VARIABLE = "VERSATIL_TOKENS_FILE"


class TokensFileError(ValueError):
    """The tokens file is missing or not in the expected form."""


def digest(salt: str, token: str) -> str:
    return hashlib.sha256((salt + token).encode()).hexdigest()


def new_token() -> str:
    """A token with 256 random bits, safe in an HTTP header."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Entry:
    """One token of the file: who it authenticates and how to recognise it."""

    principal: str
    roles: tuple[Role, ...]
    salt: str
    sha256: str

    @property
    def caller(self) -> Caller:
        return Caller(self.principal, max(self.roles))

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(digest(self.salt, token), self.sha256)

    def to_json(self) -> dict[str, Any]:
        return {"principal": self.principal, "roles": [r.label for r in self.roles], "salt": self.salt,
                "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any, index: int) -> Entry:
        where = f"tokens[{index}]"
        if not isinstance(data, dict):
            raise TokensFileError(f"{where} is not an object")
        for key in ("principal", "salt", "sha256"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise TokensFileError(f"{where}.{key} must be a non-empty string")
        roles = data.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise TokensFileError(f"{where}.roles must be a non-empty list of role names")
        try:
            parsed = tuple(Role.parse(role) for role in roles)
        except ValueError as error:
            raise TokensFileError(f"{where}.roles: {error}") from None
        if len(data["sha256"]) != 64:
            raise TokensFileError(f"{where}.sha256 must be 64 hex digits")
        return cls(data["principal"], parsed, data["salt"], data["sha256"].lower())


def load(path: Path) -> list[Entry]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise TokensFileError(f"the tokens file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise TokensFileError(f"the tokens file {path} cannot be read: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise TokensFileError(f'the tokens file {path} must hold {{"tokens": [...]}}')
    return [Entry.from_json(item, index) for index, item in enumerate(document["tokens"])]


def save(path: Path, entries: list[Entry]) -> None:
    """Replace ``path`` in one rename, so a server never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp creates it readable by its owner only.
            json.dump({"tokens": [entry.to_json() for entry in entries]}, out, indent=2)
            out.write("\n")
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def add(path: Path, principal: str, role: Role) -> str:
    """Add a token for ``principal`` to the file (created if missing); return the token."""
    entries = load(path) if path.exists() else []
    token, salt = new_token(), secrets.token_hex(16)
    save(path, [*entries, Entry(principal, (role,), salt, digest(salt, token))])
    return token


def remove(path: Path, principal: str) -> int:
    """Remove every token of ``principal``; return how many there were."""
    entries = load(path)
    kept = [entry for entry in entries if entry.principal != principal]
    save(path, kept)
    return len(entries) - len(kept)


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
