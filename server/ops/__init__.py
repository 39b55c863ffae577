"""Running the service: database connections, health, logs, metrics, tracing, TLS, workers.

Owns the embedded PostgreSQL, the pool and its per-caller session
(``database``), health checking and the embedded keeper (``health``), the log
line of each RPC (``logs``), Prometheus metrics (``metrics``), OpenTelemetry
(``tracing``), the TLS port (``tls``) and worker processes (``workers``). May
import ``server.config`` and ``server.core``; never a resource or a method.
"""
