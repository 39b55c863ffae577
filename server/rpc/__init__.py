"""The gRPC edge: the one path every call of the contract takes.

Owns the binding of every service's RPCs to their ``Method`` (``dispatch``),
where failures become statuses and every call gets one epilogue (metrics,
tracing, log line); authentication and roles (``auth``, ``tokens``); and what
runs around a behavior (``calls``: pooled connection, deadline, retries). May
import every layer below it.
"""
