"""Shared fixtures: one embedded PostgreSQL and one in-process server per test session.

Tests talk to the server through a real gRPC channel on a port chosen by the
OS; the database lives in a temporary directory and stops with the session.
What the tests share besides fixtures is in ``tests/support``.

    def test_something(api):
        dataset = api.create("Dataset")          # parents created as needed
        api.call("Dataset", "GetDataset", id=dataset.id)
"""
from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import grpc
import pytest

import models
from server.app import create_server
from server.config import Settings
from server.ops import database as db
from tests.support import ADMIN_TOKEN, Api, authorized
from tests.support.ops import scratch_database


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database on an embedded PostgreSQL in a temporary directory."""
    url = db.start_embedded(tmp_path_factory.mktemp("pg"))
    db.connect(url, Settings(pool_size=8))
    db.apply_migrations()
    return url


@pytest.fixture(scope="session")
def channel(database_url: str) -> Iterator[grpc.Channel]:
    service = create_server(Settings(listen="127.0.0.1:0", pool_size=8, dev_token=ADMIN_TOKEN))
    service.start()
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield authorized(channel)
    service.stop(None)


@pytest.fixture(scope="session")
def api(channel: grpc.Channel) -> Api:
    return Api(channel)


@pytest.fixture
def rows(database_url: str) -> Iterator[ModuleType]:
    """The models, with a database connection open for asserting on what was stored."""
    with models.database.connection_context():
        yield models


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """The URL of an empty database beside the session's, dropped afterwards."""
    with scratch_database(database_url) as url:
        yield url
