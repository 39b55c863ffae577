"""Request ids (AIP-155): a write that carries one happens once; a repeat returns its first result.

    earlier = claim("Dataset", request_id, fingerprint("Dataset", message), new_id)
    if earlier is None:
        ...create the resource with id new_id...
    else:
        ...return the resource ``earlier`` names...

A claim is a row of ``idempotency_keys``. Concurrent claims of one id wait on
its unique index, and the loser sees the winner's row once the winner commits.
A repeat with a different request is INVALID_ARGUMENT. Claims are kept for a
retention period (7 days by default) and then purged (``purge``).
"""
from __future__ import annotations

import datetime
import hashlib
import uuid

from google.protobuf.message import Message

from models import IdempotencyKey, utc_now
from server.core.errors import InvalidArgument

DEFAULT_RETENTION = datetime.timedelta(days=7)


def fingerprint(method: str, message: Message) -> str:
    """What makes two requests the same request: the method and the message, byte for byte."""
    return hashlib.sha256(method.encode() + message.SerializeToString(deterministic=True)).hexdigest()


def reused() -> InvalidArgument:
    return InvalidArgument("request_id was already used for a different request", "request_id")


def claim(method: str, request_id: uuid.UUID, print_: str, resource_id: uuid.UUID) -> uuid.UUID | None:
    """Claim ``request_id`` for a new resource ``resource_id``; the earlier resource's id if it was claimed."""
    claimed = (
        IdempotencyKey.insert(request_id=request_id, method=method, fingerprint=print_, resource_id=resource_id)
        .on_conflict_ignore()
        .execute()
    )
    if claimed is not None:
        return None
    first = IdempotencyKey.get_by_id(request_id)
    if first.method != method or first.fingerprint != print_:
        raise reused()
    return first.resource_id


def claim_many(
    method: str, wanted: dict[uuid.UUID, tuple[str, uuid.UUID]]
) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    """Claim request ids (id -> fingerprint, new resource id) in one statement.

    Returns those claimed before: id -> (their resource id, their fingerprint, or
    "" when they were claimed by another method, which no fingerprint matches).
    """
    if not wanted:
        return {}
    rows = [
        {"request_id": rid, "method": method, "fingerprint": print_, "resource_id": new_id}
        for rid, (print_, new_id) in wanted.items()
    ]
    inserted = IdempotencyKey.insert_many(rows).on_conflict_ignore().returning(IdempotencyKey.request_id).execute()
    claimed = {row.request_id for row in inserted}
    taken = [rid for rid in wanted if rid not in claimed]
    if not taken:
        return {}
    earlier = IdempotencyKey.select().where(IdempotencyKey.request_id.in_(taken))
    return {key.request_id: (key.resource_id, key.fingerprint if key.method == method else "") for key in earlier}


def purge(retention: datetime.timedelta = DEFAULT_RETENTION) -> int:
    """Forget the request ids claimed longer than ``retention`` ago; return how many."""
    return IdempotencyKey.delete().where(IdempotencyKey.created_at < utc_now() - retention).execute()
