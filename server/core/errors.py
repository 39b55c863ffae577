"""Every failure becomes a gRPC status here, and only here (AIP-193).

Handlers raise a ``ServiceError`` subclass for what they detect themselves;
database errors are translated by ``translate`` from their SQLSTATE, keeping
the constraint PostgreSQL named so that the message says which rule was broken.

    raise NotFound("Dataset", "0190…")
    raise InvalidArgument("page_size must not be negative", field="page_size")
"""
from __future__ import annotations

import copy
import logging
import re
from typing import Any

import grpc
import peewee
import psycopg2
import psycopg2.errorcodes as pgcodes
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "ml.versatil.dev"

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure with a status code, a message and the ``google.rpc`` details that fit."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init_subclass__(cls) -> None:
        cls.reason = cls.__dict__.get("reason", cls.code.name)

    def __init__(self, message: str, *details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = [*details, error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)]

    def at(self, prefix: str) -> ServiceError:
        """The same error, said of one item of a batch (``requests[3]``)."""
        located = copy.copy(self)
        located.message = f"{prefix}: {self.message}"
        return located


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, field: str = "") -> None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        super().__init__(message, error_details_pb2.BadRequest(field_violations=[violation]))
        self.field = field

    def at(self, prefix: str) -> InvalidArgument:
        field = f"{prefix}.{self.field}" if self.field else prefix
        return InvalidArgument(f"{prefix}: {self.message}", field)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type} {resource_id!r} does not exist",
            error_details_pb2.ResourceInfo(resource_type=resource_type, resource_name=resource_id),
        )


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "DATABASE_UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ServiceError):
    """No valid credentials; ``reason`` says which way they failed (MISSING_CREDENTIALS, ...)."""

    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.details = [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)]


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "ROLE_NOT_ALLOWED"

    def __init__(self, principal: str, role: str, method: str, required_role: str) -> None:
        super().__init__(f"{principal} ({role}) may not call {method}: it needs the {required_role} role")
        metadata = {"principal": principal, "role": role, "required_role": required_role}
        self.details = [error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata)]


def _driver_error(error: peewee.PeeweeException) -> psycopg2.Error | None:
    # Peewee re-raises driver errors as its own, keeping the original as ``orig``.
    cause = getattr(error, "orig", None)
    return cause if isinstance(cause, psycopg2.Error) else None


_KEY_DETAIL = re.compile(r"Key \((?P<columns>[^)]*)\)=\((?P<values>.*)\)")


def _from_database(error: peewee.PeeweeException) -> ServiceError:
    driver = _driver_error(error)
    if driver is None or driver.pgcode is None:
        if isinstance(error, (peewee.OperationalError, peewee.InterfaceError)):
            return Unavailable("the database is unreachable; retry later")
        raise error
    diagnostics = driver.diag
    constraint = diagnostics.constraint_name or ""
    detail = _KEY_DETAIL.search(diagnostics.message_detail or "")
    key = f"({detail['columns']}) = ({detail['values']})" if detail else constraint
    code = driver.pgcode
    if code == pgcodes.UNIQUE_VIOLATION:
        return AlreadyExists(f"a resource with {key} already exists")
    if code == pgcodes.FOREIGN_KEY_VIOLATION:
        if detail:
            return FailedPrecondition(f"unknown parent: {key} does not exist")
        return FailedPrecondition(f"the change would break the relation {constraint}")
    if code == pgcodes.CHECK_VIOLATION:
        field = _field_of(constraint, diagnostics.table_name)
        return InvalidArgument(f"{field or 'a value'} violates the rule {constraint}", field)
    if code == pgcodes.NOT_NULL_VIOLATION:
        column = diagnostics.column_name or ""
        return InvalidArgument(f"{column} is required", column)
    if code.startswith("54"):  # Program limits: e.g. a value too large for its index.
        return InvalidArgument(f"a value is too large: {diagnostics.message_primary}")
    if code.startswith("22"):  # Data exceptions: out of range, bad text representation.
        return InvalidArgument(diagnostics.message_primary or "invalid value")
    if code in (pgcodes.SERIALIZATION_FAILURE, pgcodes.DEADLOCK_DETECTED):
        return Aborted("the transaction conflicted with another one; retry it")
    if code == pgcodes.QUERY_CANCELED:
        return DeadlineExceeded("the deadline passed; the query was cancelled")
    if code.startswith("08") or code in (pgcodes.ADMIN_SHUTDOWN, pgcodes.CANNOT_CONNECT_NOW):
        return Unavailable("the database is unreachable; retry later")
    raise error


def _field_of(constraint: str, table: str | None) -> str:
    # PostgreSQL names a column's CHECK "<table>_<column>_check".
    prefix, suffix = f"{table}_", "_check"
    if table and constraint.startswith(prefix) and constraint.endswith(suffix):
        return constraint[len(prefix) : -len(suffix)]
    return ""


def translate(error: BaseException) -> ServiceError:
    """``error`` as a ``ServiceError``; what no rule explains is logged and INTERNAL."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, peewee.PeeweeException):
        try:
            return _from_database(error)
        except peewee.PeeweeException:
            pass
    log.error("unexpected error", exc_info=error)
    return ServiceError("internal error")


def to_rpc_status(error: ServiceError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``error`` (``translate`` any other exception first)."""
    details = []
    for detail in error.details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)

