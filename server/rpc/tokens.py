"""Bearer tokens: the file that holds their hashes (managed with ``python -m server.tokens``).

The file is named by ``VERSATIL_TOKENS_FILE`` (or ``--file``) and never holds a
token, only a random salt and ``sha256(salt + token)`` for each::

    {"tokens": [{"principal": "alice", "roles": ["writer"], "salt": "9f1c…",
                 "sha256": "<hex of sha256(salt + token)>"}]}

It is written atomically, readable by its owner only. A running server reads it
again when it changes, so added and removed tokens take effect without a
restart.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.core.principal import Caller, Role

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
