"""Authentication: every RPC of the contract needs a bearer token; health and reflection do not.

    authenticator = Authenticator(tokens_file=Path("tokens.json"), dev_token=None)
    caller = authenticator.authenticate(context.invocation_metadata())
    authorize(caller, "/versatil.ml.v1.DatasetService/DeleteDataset", Role.ADMIN)

A caller sends ``authorization: Bearer <token>`` (the scheme in any case). The
token is looked up among the hashes of the tokens file (``server.rpc.tokens``)
and the dev token, if one is configured; a missing or unknown token is
UNAUTHENTICATED. The principal's strongest role must be at least the role the
method declares (``server.rpc.dispatch``), or the call is PERMISSION_DENIED.
Both carry a ``google.rpc.ErrorInfo`` whose reason says why.

Authentication runs on the worker thread of the call, inside the one path
every call takes (``server.rpc.dispatch``); the behavior then runs as the
caller (``server.core.principal``), which the database session, the rules and
the log line read. Health and reflection are not bound by that path, so they
stay open to load balancers and tools.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.config import Settings
from server.core.errors import PermissionDenied, Unauthenticated
from server.core.principal import Caller, Role
from server.rpc.tokens import Entry, TokensFileError, load, new_token

log = logging.getLogger(__name__)

DEV_PRINCIPAL = "dev"
RELOAD_SECONDS = 1.0


def authorize(caller: Caller, method: str, required: Role) -> None:
    """PERMISSION_DENIED unless ``caller``'s role is at least ``required``."""
    if caller.role < required:
        raise PermissionDenied(caller.name, caller.role.label, method, required.label)


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The token of the first ``authorization`` metadata entry, which must be a bearer one."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        scheme, _, token = str(value).strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'", "INVALID_CREDENTIALS")
        return token.strip()
    raise Unauthenticated("this call needs an 'authorization: Bearer <token>' metadata entry", "MISSING_CREDENTIALS")


class Authenticator:
    """Recognises tokens: those of the tokens file (read again when it changes) and the dev token."""

    def __init__(self, tokens_file: Path | None = None, dev_token: str | None = None) -> None:
        if tokens_file is None and not dev_token:
            raise TokensFileError("authentication needs a tokens file or a dev token")
        self._file = tokens_file
        self._dev_token = dev_token or None
        self._lock = threading.Lock()
        self._entries: list[Entry] = load(tokens_file) if tokens_file else []
        self._version = self._file_version()
        self._checked = time.monotonic()
        # sha256(token) -> caller, for tokens already recognised: one hash per call, not one per entry.
        self._known: dict[str, Caller] = {}

    def _file_version(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._file) if self._file else None
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns) if stat else None

    def _refresh(self) -> None:
        if self._file is None or time.monotonic() - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = time.monotonic()
            version = self._file_version()
            if version == self._version:
                return
            try:
                entries = load(self._file)
            except TokensFileError as error:
                log.error("keeping the tokens read before: %s", error)
                return
            self._entries, self._version, self._known = entries, version, {}
            log.info("read %d token(s) from %s", len(entries), self._file)

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Caller:
        token = bearer_token(metadata)
        self._refresh()
        key = hashlib.sha256(token.encode()).hexdigest()
        known = self._known.get(key)
        if known is not None:
            return known
        caller = self._recognise(token)
        if caller is None:
            raise Unauthenticated("the bearer token is not valid", "INVALID_CREDENTIALS")
        if len(self._known) > 4096:
            self._known = {}
        self._known[key] = caller
        return caller

    def _recognise(self, token: str) -> Caller | None:
        if self._dev_token and hmac.compare_digest(token.encode(), self._dev_token.encode()):
            return Caller(DEV_PRINCIPAL, Role.ADMIN)
        found = [entry.caller for entry in self._entries if entry.matches(token)]
        return max(found, key=lambda c: c.role) if found else None


def authenticator(settings: Settings) -> Authenticator | None:
    """The tokens ``settings`` names, or None when authentication is off; raises if there are none."""
    if not settings.auth:
        return None
    if settings.tokens_file is None and not settings.dev_token:
        raise TokensFileError(
            "authentication needs VERSATIL_TOKENS_FILE (create it with `python -m server.tokens add "
            "--principal NAME --role admin`) or VERSATIL_DEV_TOKEN; VERSATIL_AUTH=off serves without it"
        )
    return Authenticator(settings.tokens_file, settings.dev_token)


def embedded_default(settings: Settings) -> Settings:
    """The embedded database with no tokens file: secure by default, with an admin dev token.

    ``VERSATIL_DEV_TOKEN`` is that token when set; otherwise one is generated and
    printed once, for this run only.
    """
    if not (settings.auth and settings.embedded and settings.tokens_file is None):
        return settings
    if settings.dev_token:
        log.info("authentication: the admin dev token of VERSATIL_DEV_TOKEN")
        return settings
    token = new_token()
    print(f"versatil: admin dev token for this run: {token}  (send 'authorization: Bearer <token>')",
          file=sys.stderr, flush=True)
    return dataclasses.replace(settings, dev_token=token)
