"""Shared fixtures: one embedded PostgreSQL and one in-process server per test session.

Tests talk to the server through a real gRPC channel on a port chosen by the
OS; the database lives in a temporary directory and stops with the session.

    def test_something(api):
        dataset = api.create("Dataset")          # parents created as needed
        api.stub("Dataset").GetDataset(api.request("GetDataset", id=dataset.id))
"""
from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import models
from server.ops import database as db
from server.app import create_server
from server.config import Settings
from server.core.resource import Resource
from server.domain.catalog import build_catalog
from server.domain.secrets import KeyRing

RESOURCES = build_catalog(KeyRing())

PACKAGE = "versatil.ml.v1"
SERVICE_MODULES = {
    name: importlib.import_module(f"{PACKAGE}.{resource.singular}_service_pb2_grpc")
    for name, resource in RESOURCES.items()
}


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database on an embedded PostgreSQL in a temporary directory."""
    url = db.start_embedded(tmp_path_factory.mktemp("pg"))
    db.connect(url, Settings(pool_size=8))
    db.apply_migrations()
    return url


# The session server's admin dev token: every test calls as an admin unless it says otherwise.
ADMIN_TOKEN = "tests-admin-dev-token"


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends ``authorization: Bearer <token>`` with every call of a channel."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _call(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.token}")]
        return continuation(details._replace(metadata=metadata), request)

    intercept_unary_unary = intercept_unary_stream = _call
    intercept_stream_unary = intercept_stream_stream = _call


def authorized(channel: grpc.Channel, token: str = ADMIN_TOKEN) -> grpc.Channel:
    return grpc.intercept_channel(channel, BearerToken(token))


@pytest.fixture(scope="session")
def channel(database_url: str) -> Iterator[grpc.Channel]:
    service = create_server(Settings(listen="127.0.0.1:0", pool_size=8, dev_token=ADMIN_TOKEN))
    service.start()
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield authorized(channel)
    service.stop(None)


def message(type_name: str, /, **fields: Any) -> Message:
    """Any message of the contract by name: ``message("ListDatasetsRequest", page_size=2)``."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.{type_name}")
    return message_factory.GetMessageClass(descriptor)(**fields)


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The fields a failed call's google.rpc BadRequest names (its status must be present)."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [violation.field for violation in bad.field_violations]
    return fields


def unique(prefix: str = "n") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# The fields a valid create needs beyond its parents; parents are made by Api.create.
SAMPLES: dict[str, dict[str, Any]] = {
    "Workflow": {"name": unique, "created_by": "tests", "config": {"nodes": [{"id": "train"}]}},
    "Dataset": {"name": unique, "type": 1, "storage_path": "gs://bucket/data", "size": 1024, "format": "csv"},
    "DatasetVersion": {"storage_path": "gs://bucket/data/v", "size": 512, "checksum": "abc"},
    "Model": {"name": unique, "type": 1, "framework": 2},
    "ModelVersion": {"storage_path": "gs://bucket/model", "metrics": {"accuracy": 0.9}},
    "Experiment": {"name": unique, "hyperparameters": {"lr": [0.1, 0.01]}},
    "TrainingJob": {"hyperparameters": {"lr": 0.1}, "machine_type": "n1-standard-4"},
    "Endpoint": {"name": unique},
    "Deployment": {"machine_type": "n1-standard-2", "traffic_split": 0, "min_replicas": 1, "max_replicas": 2},
    "Prediction": {"input": {"x": [1, 2]}, "latency": 12, "confidence": 0.5},
    "PatternRecognitionJob": {"name": unique, "pattern_type": 1},
    "CloudRunService": {"name": unique, "region": "europe-west1", "project_id": "p", "image": "gcr.io/p/i"},
    "ServiceDeployment": {"revision": unique, "image": "gcr.io/p/i:1"},
}

# A field each resource can change in an update, and a value for it.
UPDATES: dict[str, tuple[str, Any]] = {
    "Workflow": ("description", "changed"),
    "Dataset": ("format", "parquet"),
    "DatasetVersion": ("checksum", "def"),
    "Model": ("description", "changed"),
    "ModelVersion": ("artifact_uri", "projects/1/models/2"),
    "Experiment": ("objective_metric", "accuracy"),
    "TrainingJob": ("vertex_job_id", "job-7"),
    "Endpoint": ("url", "https://example.test/predict"),
    "Deployment": ("machine_type", "n1-standard-8"),
    "Prediction": ("error_message", "timeout"),
    "PatternRecognitionJob": ("source_uri", "gs://bucket/src"),
    "CloudRunService": ("memory", "512Mi"),
    "ServiceDeployment": ("image", "gcr.io/p/i:2"),
}


class Api:
    """Stubs for every service and builders of valid resources (with their parents)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self._stubs: dict[str, Any] = {}

    def stub(self, resource: str) -> Any:
        if resource not in self._stubs:
            stub_class = getattr(SERVICE_MODULES[resource], f"{resource}ServiceStub")
            self._stubs[resource] = stub_class(self.channel)
        return self._stubs[resource]

    def call(self, resource: str, method: str, **fields: Any) -> Message:
        """``api.call("Dataset", "GetDataset", id=...)``: build the request and send it."""
        return getattr(self.stub(resource), method)(message(f"{method}Request", **fields))

    def sample(self, resource: str, **overrides: Any) -> Message:
        """A valid, unsaved ``resource`` message whose parents exist."""
        spec = RESOURCES[resource]
        fields = {k: v() if callable(v) else v for k, v in SAMPLES[resource].items()}
        for key in spec.parents:
            if key not in overrides:
                fields[key] = self.create(_resource_of(spec, key)).id
        fields.update(overrides)
        return message(resource, **fields)

    def create(self, resource: str, **overrides: Any) -> Message:
        return self.call(resource, f"Create{resource}", **{RESOURCES[resource].singular: self.sample(resource, **overrides)})


def _resource_of(spec: Resource, key: str) -> str:
    model = spec.parents[key].rel_model
    return next(r.name for r in RESOURCES.values() if r.model is model)


@pytest.fixture(scope="session")
def api(channel: grpc.Channel) -> Api:
    return Api(channel)


@pytest.fixture
def rows(database_url: str) -> Iterator[ModuleType]:
    """The models, with a database connection open for asserting on what was stored."""
    with models.database.connection_context():
        yield models
