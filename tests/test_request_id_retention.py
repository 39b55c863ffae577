"""Request ids are remembered for ``VERSATIL_REQUEST_ID_RETENTION`` (7 days by default), then purged."""
from __future__ import annotations

import datetime
import time
import uuid

import pytest

import models
from models import IdempotencyKey, utc_now
from server.config import Settings
from server.methods import idempotency
from tests.support.security import secured_server


def _claims(*ages: datetime.timedelta) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in ages]
    rows = [
        {"request_id": rid, "method": "Dataset", "fingerprint": "f", "resource_id": uuid.uuid4(), "created_at": utc_now() - age}
        for rid, age in zip(ids, ages)
    ]
    IdempotencyKey.insert_many(rows).execute()
    return ids


def _kept(ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return {row.request_id for row in IdempotencyKey.select().where(IdempotencyKey.request_id.in_(ids))}


def test_purge_forgets_only_the_claims_older_than_the_retention(rows) -> None:
    old, recent = _claims(datetime.timedelta(days=8), datetime.timedelta(days=6))
    assert idempotency.purge(datetime.timedelta(days=7)) >= 1
    assert _kept([old, recent]) == {recent}
    assert idempotency.DEFAULT_RETENTION == datetime.timedelta(days=7)


def test_the_retention_is_a_setting_with_a_clear_error() -> None:
    assert Settings().request_id_retention == datetime.timedelta(days=7)
    assert Settings.from_env({"VERSATIL_REQUEST_ID_RETENTION": "12h"}).request_id_retention == datetime.timedelta(hours=12)
    assert Settings.from_env({"VERSATIL_REQUEST_ID_RETENTION": "90s"}).request_id_retention == datetime.timedelta(seconds=90)
    with pytest.raises(ValueError, match="VERSATIL_REQUEST_ID_RETENTION must be a number followed by s, m, h or d"):
        Settings.from_env({"VERSATIL_REQUEST_ID_RETENTION": "7 days"})
    with pytest.raises(ValueError, match="longer than zero"):
        Settings.from_env({"VERSATIL_REQUEST_ID_RETENTION": "0d"})


def test_a_running_server_purges_request_ids_past_the_retention(tmp_path, database_url: str) -> None:
    with secured_server(tmp_path, {"walt": "writer"}, request_id_retention=datetime.timedelta(seconds=1)) as server:
        api = server.api("walt")
        request_id = str(uuid.uuid4())
        first = api.call("Dataset", "CreateDataset", request_id=request_id, dataset=api.sample("Dataset"))
        with models.database.connection_context():
            deadline = time.monotonic() + 15
            while _kept([uuid.UUID(request_id)]):
                assert time.monotonic() < deadline, "the request id was still kept after its retention"
                time.sleep(0.2)
        # Forgotten: the same id now makes a new resource, even for a different request.
        again = api.call("Dataset", "CreateDataset", request_id=request_id, dataset=api.sample("Dataset"))
    assert again.id != first.id
