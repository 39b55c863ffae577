"""Service configuration, read once from the environment.

| variable | default | meaning |
|---|---|---|
| ``VERSATIL_LISTEN`` | ``127.0.0.1:50051`` | gRPC listen address (port 0 picks a free port) |
| ``DATABASE_URL`` | unset | PostgreSQL 15+ with pgvector; unset runs an embedded PostgreSQL 18 |
| ``VERSATIL_DATA_DIR`` | ``.data`` | where the embedded PostgreSQL keeps its files |
| ``VERSATIL_POOL_SIZE`` | ``16`` | database connections per process |
| ``VERSATIL_POOL_TIMEOUT`` | ``10`` | seconds an RPC waits for a free connection |
| ``VERSATIL_GRACE_SECONDS`` | ``10`` | how long SIGTERM waits for in-flight calls |
| ``VERSATIL_PAGE_TOKEN_KEY`` | unset | HMAC key for page tokens; unset uses the key stored in the database |
| ``VERSATIL_METRICS_LISTEN`` | ``127.0.0.1:9464`` | Prometheus ``/metrics`` address (port 0 picks one); ``off`` disables |
| ``VERSATIL_LOG_FORMAT`` | ``auto`` | ``json``, ``text``, or ``auto``: text when stderr is a terminal, JSON otherwise |
| ``VERSATIL_BACKUP_DIR`` | ``backups`` | where ``python -m server.backup dump`` writes its files |
| ``VERSATIL_AUTH`` | ``on`` | ``off`` serves every call without authentication (no principal, no row-level security) |
| ``VERSATIL_TOKENS_FILE`` | unset | the bearer tokens' hashes (``python -m server.tokens add``) |
| ``VERSATIL_DEV_TOKEN`` | unset | an admin token given in clear; the embedded default generates one when no tokens file is set |
| ``VERSATIL_ENCRYPTION_KEYS`` | unset | base64 AES-256 keys for ``secrets`` values, newest first (``python -m server.encryption new-key``) |
| ``VERSATIL_TLS_CERT``, ``VERSATIL_TLS_KEY`` | unset | PEM certificate chain and key: serve TLS instead of plaintext |
| ``VERSATIL_TLS_CLIENT_CA`` | unset | PEM CA bundle: require client certificates it signed (mutual TLS) |
| ``VERSATIL_MAX_MESSAGE_BYTES`` | ``4194304`` | larger requests are RESOURCE_EXHAUSTED |
| ``VERSATIL_MAX_BATCH`` | ``1000`` | items in a BatchCreate or BatchGet |
| ``VERSATIL_MAX_PAGE_SIZE`` | ``1000`` | larger page sizes are clamped |
| ``VERSATIL_MAX_FILTER_LENGTH``, ``VERSATIL_MAX_FILTER_DEPTH`` | ``4096``, ``32`` | longer or deeper filters are INVALID_ARGUMENT |
| ``VERSATIL_REQUEST_ID_RETENTION`` | ``7d`` | how long a request id is remembered (``s``, ``m``, ``h`` or ``d``), then purged |

A ``Settings`` is read once by the entry point and passed down: the limits as
``settings.limits``, everything else as the values each part needs. Nothing
here imports the rest of the server but ``server.core``.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from server.core.limits import Limits


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str | None = None
    data_dir: Path = Path(".data")
    pool_size: int = 16
    pool_timeout: float = 10.0
    grace_seconds: float = 10.0
    page_token_key: str | None = None
    workers: int = 1
    metrics_listen: str = "127.0.0.1:9464"
    log_format: str = "auto"
    backup_dir: Path = Path("backups")
    request_id_retention: datetime.timedelta = datetime.timedelta(days=7)
    # Security (``server.rpc.auth``, ``server.domain.secrets``, ``server.ops.tls``): see the table above.
    auth: bool = True
    tokens_file: Path | None = None
    dev_token: str | None = None
    encryption_keys: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Limits (``settings.limits``, and gRPC's own for the message size).
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch: int = 1000
    max_page_size: int = 1000
    max_filter_length: int = 4096
    max_filter_depth: int = 32

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def limits(self) -> Limits:
        return Limits(self.max_batch, self.max_page_size, self.max_filter_length, self.max_filter_depth)

    def __post_init__(self) -> None:
        self.limits  # Refuse limits below 1 when the settings are read, not at the first call.
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be at least 1, not {self.max_message_bytes}")
        if self.request_id_retention <= datetime.timedelta(0):
            raise ValueError("VERSATIL_REQUEST_ID_RETENTION must be longer than zero")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            listen=env.get("VERSATIL_LISTEN", cls.listen),
            database_url=env.get("DATABASE_URL") or None,
            data_dir=Path(env.get("VERSATIL_DATA_DIR", str(cls.data_dir))),
            pool_size=int(env.get("VERSATIL_POOL_SIZE", cls.pool_size)),
            pool_timeout=float(env.get("VERSATIL_POOL_TIMEOUT", cls.pool_timeout)),
            grace_seconds=float(env.get("VERSATIL_GRACE_SECONDS", cls.grace_seconds)),
            page_token_key=env.get("VERSATIL_PAGE_TOKEN_KEY") or None,
            workers=int(env.get("VERSATIL_WORKERS") or usable_cores()),
            metrics_listen=env.get("VERSATIL_METRICS_LISTEN", cls.metrics_listen),
            log_format=env.get("VERSATIL_LOG_FORMAT", cls.log_format).lower(),
            backup_dir=Path(env.get("VERSATIL_BACKUP_DIR", str(cls.backup_dir))),
            auth=_switch(env.get("VERSATIL_AUTH", "on"), "VERSATIL_AUTH"),
            tokens_file=_path(env.get("VERSATIL_TOKENS_FILE")),
            dev_token=env.get("VERSATIL_DEV_TOKEN") or None,
            encryption_keys=tuple(k.strip() for k in env.get("VERSATIL_ENCRYPTION_KEYS", "").split(",") if k.strip()),
            tls_cert=_path(env.get("VERSATIL_TLS_CERT")),
            tls_key=_path(env.get("VERSATIL_TLS_KEY")),
            tls_client_ca=_path(env.get("VERSATIL_TLS_CLIENT_CA")),
            max_message_bytes=int(env.get("VERSATIL_MAX_MESSAGE_BYTES", cls.max_message_bytes)),
            max_batch=int(env.get("VERSATIL_MAX_BATCH", cls.max_batch)),
            max_page_size=int(env.get("VERSATIL_MAX_PAGE_SIZE", cls.max_page_size)),
            max_filter_length=int(env.get("VERSATIL_MAX_FILTER_LENGTH", cls.max_filter_length)),
            max_filter_depth=int(env.get("VERSATIL_MAX_FILTER_DEPTH", cls.max_filter_depth)),
            request_id_retention=duration(env.get("VERSATIL_REQUEST_ID_RETENTION", "7d"), "VERSATIL_REQUEST_ID_RETENTION"),
        )


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _switch(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise ValueError(f"{name} must be on or off, not {text!r}")
    return value in ("on", "true", "1")


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str, name: str) -> datetime.timedelta:
    """``90s``, ``30m``, ``12h`` or ``7d``."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        return datetime.timedelta(**{_UNITS[unit]: float(value)})
    except (KeyError, ValueError):
        raise ValueError(f"{name} must be a number followed by s, m, h or d (like 7d), not {text!r}") from None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
