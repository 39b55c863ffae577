"""Authentication and roles: every RPC but health and reflection needs a bearer token.

    authenticator = Authenticator(tokens_file=Path("tokens.json"), dev_token=None)
    grpc.server(executor, interceptors=[AuthInterceptor(authenticator)])

A caller sends ``authorization: Bearer <token>`` (the scheme in any case). The
token is looked up among the hashes of the tokens file (``server.tokens``) and
the dev token, if one is configured; a missing or unknown token is
UNAUTHENTICATED. The principal's strongest role must allow the method
(``required_role``), or the call is PERMISSION_DENIED. Both carry a
``google.rpc.ErrorInfo`` whose reason says why.

The interceptor wraps each handler: authentication runs on the worker thread of
the call, and the handler then runs as the caller (``server.principal``), which
the database session (``server.database``), the rules and the log line read.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server import logs, metrics, principal, tracing
from server.config import Settings
from server.errors import DOMAIN, ServiceError, to_rpc_status
from server.principal import Caller, Role
from server.tokens import Entry, TokensFileError, load, new_token

log = logging.getLogger(__name__)

DEV_PRINCIPAL = "dev"
# Services anyone may call: load balancers and tools must reach them without a token.
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
# Services whose every RPC only reads.
READ_SERVICES = frozenset({"versatil.ml.v1.LineageService"})
READ_PREFIXES = ("Get", "List", "BatchGet", "Search")
WRITE_PREFIXES = ("Create", "Update", "BatchCreate")
# Custom RPCs that change resources, beside the standard writes.
WRITE_RPCS = frozenset({"CancelTrainingJob", "DeployModelVersion", "UndeployModelVersion", "RollbackCloudRunService"})
RELOAD_SECONDS = 1.0
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def required_role(method: str) -> Role:
    """The weakest role allowed to call ``/package.Service/Method``; unknown methods need admin."""
    service, _, name = method.lstrip("/").partition("/")
    if service in READ_SERVICES or name.startswith(READ_PREFIXES):
        return Role.READER
    if name.startswith(WRITE_PREFIXES) or name in WRITE_RPCS:
        return Role.WRITER
    return Role.ADMIN


def is_open(method: str) -> bool:
    return method.lstrip("/").partition("/")[0] in OPEN_SERVICES


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.details = [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)]


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "ROLE_NOT_ALLOWED"

    def __init__(self, caller: Caller, method: str, needed: Role) -> None:
        super().__init__(
            f"{caller.name} ({caller.role.label}) may not call {method}: it needs the {needed.label} role"
        )
        info = error_details_pb2.ErrorInfo(
            reason=self.reason,
            domain=DOMAIN,
            metadata={"principal": caller.name, "role": caller.role.label, "required_role": needed.label},
        )
        self.details = [info]


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


Behavior = Callable[[Any, grpc.ServicerContext], Any]


class AuthInterceptor(grpc.ServerInterceptor):
    """Runs each RPC as its authenticated caller, or refuses it."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or is_open(details.method):
            return handler
        method, needed = details.method, required_role(details.method)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._as_caller(handler.unary_unary, method, needed))
        # Streaming RPCs (none in the contract today) are checked, without running as the caller.
        kind = next(k for k in ("unary_stream", "stream_unary", "stream_stream") if getattr(handler, k) is not None)
        return handler._replace(**{kind: self._checked(getattr(handler, kind), method, needed)})

    def _caller(self, context: grpc.ServicerContext, method: str, needed: Role) -> Caller:
        started = time.perf_counter()
        caller = None
        try:
            caller = self.authenticator.authenticate(context.invocation_metadata())
            if caller.role < needed:
                raise PermissionDenied(caller, method, needed)
            return caller
        except Exception as error:
            _refuse(context, method, error, time.perf_counter() - started, caller)
            raise

    def _as_caller(self, behavior: Behavior, method: str, needed: Role) -> Behavior:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with principal.acting_as(self._caller(context, method, needed)):
                return behavior(request, context)

        return handle

    def _checked(self, behavior: Behavior, method: str, needed: Role) -> Behavior:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            self._caller(context, method, needed)
            return behavior(request, context)

        return handle


def _refuse(
    context: grpc.ServicerContext, method: str, error: Exception, seconds: float, caller: Caller | None
) -> None:
    """Count, trace and log a refused call as ``server.routing`` does the others, then abort it."""
    status = to_rpc_status(error)
    code = _CODES[status.code]
    metrics.observe(method, code, seconds)
    tracing.record(code)
    token = logs.principal.set(caller.name if caller else "")
    try:
        logs.rpc(context, method, code, seconds)
    finally:
        logs.principal.reset(token)
    context.abort_with_status(rpc_status.to_status(status))


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


def interceptors(settings: Settings) -> list[grpc.ServerInterceptor]:
    """The authentication interceptor ``settings`` asks for; none when authentication is off."""
    found = authenticator(settings)
    if found is None:
        log.warning("authentication is off (VERSATIL_AUTH=off): every caller may do everything")
        return []
    return [AuthInterceptor(found)]


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
