"""The size limits of requests, set once from ``Settings`` when the server is made.

    limits.apply(settings)     # create_server does it
    grpc.server(..., options=limits.grpc_options(settings))

| limit | setting | default | beyond it |
|---|---|---|---|
| request size | ``max_message_bytes`` | 4 MiB | RESOURCE_EXHAUSTED (grpc, before any handler runs) |
| items in a BatchCreate or BatchGet | ``max_batch`` | 1000 | INVALID_ARGUMENT (``server.methods``) |
| page size | ``max_page_size`` | 1000 | clamped (``server.pagination``) |
| filter length | ``max_filter_length`` | 4096 characters | INVALID_ARGUMENT (``server.filters``) |
| filter nesting of AND, OR and NOT | ``max_filter_depth`` | 32 | INVALID_ARGUMENT (``server.filters``) |

The three modules read their limit at each call from a module constant, which
``apply`` sets; the limits are therefore those of the process, like its pool.
"""
from __future__ import annotations

from typing import Any

from server import filters, methods, pagination
from server.config import Settings


def apply(settings: Settings) -> None:
    for name in ("max_batch", "max_page_size", "max_filter_length", "max_filter_depth", "max_message_bytes"):
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be at least 1, not {getattr(settings, name)}")
    methods.MAX_BATCH = settings.max_batch
    pagination.MAX_PAGE_SIZE = settings.max_page_size
    filters.MAX_FILTER_LENGTH = settings.max_filter_length
    filters.MAX_DEPTH = settings.max_filter_depth


def grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", settings.max_message_bytes)]
