"""Logs: one structured line per RPC, JSON for machines and plain text for people.

    logs.configure("auto")    # JSON lines on stderr, or text when stderr is a terminal
    logs.rpc(context, "/versatil.ml.v1.DatasetService/GetDataset", grpc.StatusCode.OK, 0.0012, "alice")

Every log line of the process goes through the same formatter. An RPC's line carries

| field | value |
|---|---|
| ``method`` | the full gRPC method name |
| ``code`` | the status code's name (``OK``, ``NOT_FOUND``…) |
| ``duration_ms`` | time spent in the handler |
| ``principal`` | who called, as authenticated; empty when authentication is off or failed |
| ``request_id`` | the caller's ``x-request-id`` metadata, or a generated one; echoed as trailing metadata |

A JSON line looks like::

    {"time": "2026-05-01T12:00:00.000Z", "level": "INFO", "logger": "versatil.rpc",
     "message": "/versatil.ml.v1.DatasetService/GetDataset OK 1.2ms", "method": "...",
     "code": "OK", "duration_ms": 1.2, "principal": "alice", "request_id": "..."}
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import uuid
from typing import Any

import grpc

REQUEST_ID_KEY = "x-request-id"
FORMATS = ("auto", "json", "text")

log = logging.getLogger("versatil.rpc")

# A caller's request id is echoed into logs and metadata only if it is short and
# plain; anything else is replaced by a generated one.
_PLAIN_ID = re.compile(r"[\w.:/+=@-]{1,128}")
_FIELDS = "fields"  # The ``extra`` key that carries a line's structured fields.
_RECORD_KEYS = ("time", "level", "logger", "message")


def request_id(context: grpc.ServicerContext) -> str:
    """The caller's ``x-request-id``, or a new one if it sent none (or an unusable one)."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _PLAIN_ID.fullmatch(value):
            return value
    return str(uuid.uuid4())


def rpc(context: grpc.ServicerContext, method: str, code: grpc.StatusCode, seconds: float, principal: str) -> None:
    """Log the RPC that ends now, and echo its request id as trailing metadata."""
    rid = request_id(context)
    # Appended, not set: an aborted call's trailing metadata carries its status details.
    context.set_trailing_metadata((*(context.trailing_metadata() or ()), (REQUEST_ID_KEY, rid)))
    log_call(method, code, seconds, principal, rid)


def log_call(method: str, code: grpc.StatusCode, seconds: float, principal: str, rid: str) -> None:
    milliseconds = round(seconds * 1000, 3)
    fields = {
        "method": method,
        "code": code.name,
        "duration_ms": milliseconds,
        "principal": principal,
        "request_id": rid,
    }
    log.info("%s %s %.1fms", method, code.name, milliseconds, extra={_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, _FIELDS, {}).items():
            line[key if key not in _RECORD_KEYS else f"field_{key}"] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, then the fields that the message does not already say."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, _FIELDS, {})
        said = {"method", "code", "duration_ms"}
        extra = " ".join(f"{key}={value or '-'}" for key, value in fields.items() if key not in said)
        if not extra:
            return text
        first, newline, rest = text.partition("\n")  # Keep a traceback below the fields.
        return f"{first} {extra}{newline}{rest}"


def formatter(log_format: str = "auto", stream: Any = None) -> logging.Formatter:
    """The formatter for ``log_format``; ``auto`` is text on a terminal, JSON otherwise."""
    if log_format not in FORMATS:
        raise ValueError(f"VERSATIL_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if log_format == "auto":
        stream = sys.stderr if stream is None else stream
        log_format = "text" if _isatty(stream) else "json"
    return TextFormatter() if log_format == "text" else JsonFormatter()


def configure(log_format: str = "auto") -> None:
    """Send every log line of the process to stderr at INFO, in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, sys.stderr))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # pgserver narrates every pg_ctl call at INFO; only its problems matter here.
    logging.getLogger("pgserver").setLevel(logging.WARNING)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _utc(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
