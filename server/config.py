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
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from server import logs


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str | None = None
    data_dir: Path = Path(".data")
    pool_size: int = 16
    pool_timeout: float = 10.0
    grace_seconds: float = 10.0
    page_token_key: str | None = None
    metrics_listen: str = "127.0.0.1:9464"
    log_format: str = "auto"
    backup_dir: Path = Path("backups")

    @property
    def embedded(self) -> bool:
        return self.database_url is None

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
            metrics_listen=env.get("VERSATIL_METRICS_LISTEN", cls.metrics_listen),
            log_format=env.get("VERSATIL_LOG_FORMAT", cls.log_format).lower(),
            backup_dir=Path(env.get("VERSATIL_BACKUP_DIR", str(cls.backup_dir))),
        )


def configure_logging(settings: Settings | None = None) -> None:
    """Log lines to stderr as ``VERSATIL_LOG_FORMAT`` says (see ``server.logs``)."""
    logs.configure((settings or Settings.from_env()).log_format)
    # pgserver narrates every pg_ctl call at INFO; only its problems matter here.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
