"""What the tests share: messages by name, a client for every service, and checks of failed calls.

    api = Api(channel)
    dataset = api.create("Dataset")                     # parents created as needed
    api.call("Dataset", "GetDataset", id=dataset.id)
    error = refused(lambda: api.call("Dataset", "GetDataset", id="x"), grpc.StatusCode.INVALID_ARGUMENT)
    assert_invalid(error, "id")

Fixtures live in ``tests/conftest.py``; the helpers of one area live beside this module
(``domain``, ``ops``, ``security``, ``stats``).
"""
from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.core.resource import Resource
from server.domain.catalog import build_catalog
from server.domain.secrets import KeyRing

ROOT = Path(__file__).resolve().parents[2]

RESOURCES = build_catalog(KeyRing())

PACKAGE = "versatil.ml.v1"
SERVICE_MODULES = {
    name: importlib.import_module(f"{PACKAGE}.{resource.singular}_service_pb2_grpc")
    for name, resource in RESOURCES.items()
}

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


def message(type_name: str, /, **fields: Any) -> Message:
    """Any message of the contract by name: ``message("ListDatasetsRequest", page_size=2)``."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.{type_name}")
    return message_factory.GetMessageClass(descriptor)(**fields)


def unique(prefix: str = "n") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- failed calls


def rpc_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    """The ``grpc.RpcError`` that ``call(*args, **kwargs)`` raises; the test fails if it returns.

    Nothing is checked of the error: use it for failures that gRPC itself produces (deadlines,
    unknown methods, oversized messages), and ``refused`` for the service's own.
    """
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def error_details(error: grpc.RpcError, kind: type[Message]) -> list[Any]:
    """The ``google.rpc`` details of type ``kind`` that ``error`` carries (its Status must be present)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status in the trailers of {error.code()}: {error.details()!r}"
    found = []
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            detail = kind()
            packed.Unpack(detail)
            found.append(detail)
    return found


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo every error of the service carries."""
    infos = error_details(error, error_details_pb2.ErrorInfo)
    assert infos, f"no ErrorInfo in {error.details()!r}"
    return infos[0]


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The fields a failed call's google.rpc BadRequest names (its status must be present)."""
    return [v.field for bad in error_details(error, error_details_pb2.BadRequest) for v in bad.field_violations]


def refused(call: Callable[..., Any], code: grpc.StatusCode, *contains: str) -> grpc.RpcError:
    """The error ``call()`` fails with, which the service made: ``code``, a message holding each
    of ``contains``, and a google.rpc.Status whose ErrorInfo gives a reason."""
    error = rpc_error(call)
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()!r}"
    for text in contains:
        assert text in (error.details() or ""), f"{text!r} not in the message {error.details()!r}"
    assert error_info(error).reason, f"an ErrorInfo without a reason in {error.details()!r}"
    return error


def assert_invalid(error: grpc.RpcError, field: str, *contains: str) -> grpc.RpcError:
    """``error`` is the service's INVALID_ARGUMENT whose BadRequest names exactly ``field`` (a
    request path such as ``requests[1].request_id``) and whose message holds each of ``contains``."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    for text in contains:
        assert text in (error.details() or ""), f"{text!r} not in the message {error.details()!r}"
    assert error_info(error).reason, f"an ErrorInfo without a reason in {error.details()!r}"
    fields = bad_request_fields(error)
    assert field in fields, f"BadRequest names {fields}, not {field!r} ({error.details()!r})"
    return error


# --------------------------------------------------------------------------- valid resources

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


def list_all(api: Api, resource: str, filter_text: str, **fields: Any) -> list[Message]:
    """Every ``resource`` matching ``filter_text``, following next_page_token to the end."""
    found: list[Message] = []
    token = ""
    while True:
        response = api.call(resource, f"List{resource}s", filter=filter_text, page_token=token, **fields)
        found += getattr(response, RESOURCES[resource].plural)
        token = response.next_page_token
        if not token:
            return found


def _resource_of(spec: Resource, key: str) -> str:
    model = spec.parents[key].rel_model
    return next(r.name for r in RESOURCES.values() if r.model is model)
