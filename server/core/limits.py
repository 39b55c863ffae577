"""The size limits of requests, one frozen value passed to what enforces them.

| limit | default | beyond it |
|---|---|---|
| ``max_batch``: items in a BatchCreate or BatchGet | 1000 | INVALID_ARGUMENT |
| ``max_page_size`` | 1000 | clamped |
| ``max_filter_length`` in characters | 4096 | INVALID_ARGUMENT |
| ``max_filter_depth``: nesting of AND, OR and NOT | 32 | INVALID_ARGUMENT |

The request size limit is gRPC's own (``VERSATIL_MAX_MESSAGE_BYTES``, set on the server).
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    max_batch: int = 1000
    max_page_size: int = 1000
    max_filter_length: int = 4096
    max_filter_depth: int = 32

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if value < 1:
                raise ValueError(f"{limit.name} must be at least 1, not {value}")
