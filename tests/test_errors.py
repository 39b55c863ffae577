"""Errors (AIP-193): every status code of API.md's error table that applies so far,
each with the ``google.rpc`` details that fit, and the server serving on afterwards.

Details are read from the ``grpc-status-details-bin`` trailer with
``grpc_status.rpc_status.from_call`` and unpacked from ``status.details``.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support import RESOURCES, UPDATES, message, rpc_error, unique

# --------------------------------------------------------------------------- helpers

DETAIL_TYPES = (
    error_details_pb2.BadRequest,
    error_details_pb2.ResourceInfo,
    error_details_pb2.ErrorInfo,
    error_details_pb2.PreconditionFailure,
)
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def details(error: grpc.RpcError) -> dict[str, Message]:
    """The google.rpc details of ``error`` by type name; checks the Status matches the call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status trailer on {error.code()}: {error.details()}"
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    found: dict[str, Message] = {}
    for packed in status.details:
        for kind in DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind.__name__] = detail
    return found


def expect(error: grpc.RpcError, code: grpc.StatusCode) -> dict[str, Message]:
    """``error`` has ``code``, a message and an ErrorInfo with a reason and a domain."""
    assert error.code() == code, (error.code(), error.details())
    assert error.details(), "the status has no message"
    found = details(error)
    info = found.get("ErrorInfo")
    assert info is not None, f"no ErrorInfo in {list(found)}"
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", info.reason), info.reason
    assert info.domain
    return found


def violations(found: dict[str, Message]) -> list[str]:
    bad = found.get("BadRequest")
    assert bad is not None, f"no BadRequest in {list(found)}"
    assert all(v.description for v in bad.field_violations)
    return [v.field for v in bad.field_violations]


def names_field(paths: list[str], field: str) -> bool:
    """``field`` itself or as a path inside the request (``workflow.name``, ``requests[0].name``)."""
    return any(p == field or p.endswith("." + field) for p in paths)


def assert_serving(api: Any) -> None:
    """The server still answers a normal call."""
    workflow = api.create("Workflow")
    assert api.call("Workflow", "GetWorkflow", id=workflow.id) == workflow


def raw(api: Any, path: str) -> Callable[..., bytes]:
    """A method called with raw request bytes and returning raw response bytes."""
    return api.channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def field_bytes(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    """One encoded field (tag, and payload as given)."""
    tag, out = (number << 3) | wire_type, b""
    while True:
        byte, tag = tag & 0x7F, tag >> 7
        out += bytes([byte | (0x80 if tag else 0)])
        if not tag:
            return out + payload


def service_path(resource: str, method: str) -> str:
    return f"/versatil.ml.v1.{resource}Service/{method}"


# --------------------------------------------------------------------------- INVALID_ARGUMENT: garbage bytes

GARBAGE = {
    "ff ff ff": b"\xff\xff\xff",
    "truncated varint": b"\x08",
    "length past the end": b"\x0a\x7f",
    "wire type 7": b"\x0f",
    "stray end group": b"\x0c",
    "unclosed groups": b"\x0b" * 200,
    "zero tag": b"\x00",
    "random": bytes(range(255, 0, -3)),
}
GARBAGE_METHODS = [
    ("Dataset", "GetDataset"),
    ("Workflow", "CreateWorkflow"),
    ("Prediction", "ListPredictions"),
    ("ModelVersion", "UpdateModelVersion"),
    ("Deployment", "DeleteDeployment"),
    ("Endpoint", "BatchCreateEndpoints"),
    ("CloudRunService", "BatchGetCloudRunServices"),
]


@pytest.mark.parametrize("resource, method", GARBAGE_METHODS, ids=[m for _, m in GARBAGE_METHODS])
@pytest.mark.parametrize("payload", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_bytes_are_invalid_argument(api, resource, method, payload):
    error = rpc_error(raw(api, service_path(resource, method)), payload)

    found = expect(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "BadRequest" in found
    assert_serving(api)


@pytest.mark.parametrize(
    "resource, method, field_number",
    [("Dataset", "GetDataset", 1), ("Workflow", "CreateWorkflow", 2), ("Dataset", "ListDatasets", 3)],
)
def test_invalid_utf8_in_a_string_field_is_invalid_argument(api, resource, method, field_number):
    payload = field_bytes(field_number, 2, b"\x02\xff\xfe")

    error = rpc_error(raw(api, service_path(resource, method)), payload)

    expect(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert_serving(api)


# --------------------------------------------------------------------------- INVALID_ARGUMENT: bad values


def _update(api: Any, resource: str, paths: list[str], **fields: Any) -> Any:
    created = api.create(resource)
    singular = RESOURCES[resource].singular
    return api.call(
        resource,
        f"Update{resource}",
        **{singular: message(resource, id=created.id, **fields)},
        update_mask={"paths": paths},
    )


def _batch(api: Any, resource: str, count: int) -> Any:
    singular = RESOURCES[resource].singular
    sample = api.sample(resource)
    requests = [message(f"Create{resource}Request", **{singular: sample}) for _ in range(count)]
    return api.call(resource, f"BatchCreate{resource}s", requests=requests)


INVALID: dict[str, tuple[Callable[[Any], Any], str]] = {
    "malformed id": (lambda api: api.call("Dataset", "GetDataset", id="not-a-uuid"), "id"),
    "empty id": (lambda api: api.call("Dataset", "GetDataset", id=""), "id"),
    "malformed id on delete": (lambda api: api.call("Workflow", "DeleteWorkflow", id="123"), "id"),
    "malformed id in batch get": (
        lambda api: api.call("Workflow", "BatchGetWorkflows", ids=[api.create("Workflow").id, "nope"]),
        "ids[1]",
    ),
    "negative page_size": (lambda api: api.call("Workflow", "ListWorkflows", page_size=-1), "page_size"),
    "bad filter": (lambda api: api.call("Workflow", "ListWorkflows", filter="foo = 1"), "filter"),
    "bad order_by": (lambda api: api.call("Workflow", "ListWorkflows", order_by="name up"), "order_by"),
    "forged page token": (lambda api: api.call("Workflow", "ListWorkflows", page_token="AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "page_token"),
    "missing required name": (lambda api: api.create("Workflow", name=""), "name"),
    "created_by in an update mask": (lambda api: api.call("Workflow", "UpdateWorkflow", workflow=api.create("Workflow"),
                                                          update_mask={"paths": ["created_by"]}), "update_mask"),
    "name of 201 characters": (lambda api: api.create("Workflow", name="x" * 201), "name"),
    "embedding of 3 dimensions": (lambda api: api.create("Workflow", embedding=[0.1, 0.2, 0.3]), "embedding"),
    "embedding of 385 dimensions": (lambda api: api.create("Prediction", embedding=[0.0] * 385), "embedding"),
    "embedding with NaN": (lambda api: api.create("Workflow", embedding=[float("nan")] * 384), "embedding"),
    "confidence above 1": (lambda api: api.create("Prediction", confidence=1.5), "confidence"),
    "confidence NaN": (lambda api: api.create("Prediction", confidence=float("nan")), "confidence"),
    "negative size": (lambda api: api.create("Dataset", size=-1), "size"),
    "negative latency": (lambda api: api.create("Prediction", latency=-5), "latency"),
    "traffic_split above 100": (lambda api: api.create("Deployment", traffic_split=101), "traffic_split"),
    "version 0": (lambda api: api.create("DatasetVersion", version=0), "version"),
    "unknown enum number": (lambda api: api.create("Workflow", status=99), "status"),
    "malformed parent id": (lambda api: api.create("Dataset", workflow_id="nope"), "workflow_id"),
    "timestamp out of range": (
        lambda api: api.create("TrainingJob", start_time=timestamp_pb2.Timestamp(seconds=10**12)),
        "start_time",
    ),
    "timestamp nanos out of range": (
        lambda api: api.create("TrainingJob", start_time=timestamp_pb2.Timestamp(seconds=0, nanos=2_000_000_000)),
        "start_time",
    ),
    "max_replicas below min_replicas": (
        lambda api: api.create("Deployment", min_replicas=3, max_replicas=2),
        "max_replicas",
    ),
    "NUL character in a string": (lambda api: api.create("Workflow", name="a\x00b"), "name"),
    "NaN inside a Struct": (lambda api: api.create("Workflow", config={"lr": float("nan")}), "config"),
    "Infinity inside a Struct": (lambda api: api.create("Dataset", metadata={"rows": float("inf")}), "metadata"),
    "update names an immutable field": (
        lambda api: _update(api, "Dataset", ["workflow_id"], workflow_id=str(uuid.uuid4())),
        "update_mask",
    ),
    "update names an output-only field": (lambda api: _update(api, "Workflow", ["created_at"]), "update_mask"),
    "update names an unknown field": (lambda api: _update(api, "Workflow", ["colour"]), "update_mask"),
    "update clears a required field": (lambda api: _update(api, "Workflow", ["name"]), "name"),
    "batch of 0": (lambda api: api.call("Workflow", "BatchCreateWorkflows", requests=[]), "requests"),
    "batch of 1001": (lambda api: _batch(api, "Prediction", 1001), "requests"),
}


@pytest.mark.parametrize("cause", list(INVALID.values()), ids=list(INVALID))
def test_invalid_argument_with_bad_request(api, cause):
    call, field = cause

    error = rpc_error(call, api)

    assert error.code() not in NEVER, (error.code(), error.details())
    found = expect(error, grpc.StatusCode.INVALID_ARGUMENT)
    paths = violations(found)
    assert names_field(paths, field), f"{field!r} not among the violations {paths}"
    assert_serving(api)


def test_invalid_item_of_a_batch_names_its_index(api):
    sample = api.sample("Workflow")
    requests = [message("CreateWorkflowRequest", workflow=sample) for _ in range(3)]
    requests[2].workflow.name = ""

    error = rpc_error(api.call, "Workflow", "BatchCreateWorkflows", requests=requests)

    paths = violations(expect(error, grpc.StatusCode.INVALID_ARGUMENT))
    assert any(p.startswith("requests[2]") for p in paths), paths


# --------------------------------------------------------------------------- NOT_FOUND


def _assert_resource_info(found: dict[str, Message], resource: str, resource_id: str) -> None:
    info = found.get("ResourceInfo")
    assert info is not None, f"no ResourceInfo in {list(found)}"
    assert re.fullmatch(rf"(.*[./])?{resource}", info.resource_type), info.resource_type
    assert resource_id in info.resource_name, info.resource_name


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_get_unknown_id_is_not_found(api, resource):
    missing = str(uuid.uuid4())

    error = rpc_error(api.call, resource, f"Get{resource}", id=missing)

    found = expect(error, grpc.StatusCode.NOT_FOUND)
    _assert_resource_info(found, resource, missing)
    assert missing in error.details()
    assert_serving(api)


@pytest.mark.parametrize("resource", ["Workflow", "Dataset", "Prediction", "ServiceDeployment"])
def test_update_and_delete_unknown_id_are_not_found(api, resource):
    missing = str(uuid.uuid4())
    field, value = UPDATES[resource]
    singular = RESOURCES[resource].singular

    update = rpc_error(
        api.call,
        resource,
        f"Update{resource}",
        **{singular: message(resource, id=missing, **{field: value})},
        update_mask={"paths": [field]},
    )
    delete = rpc_error(api.call, resource, f"Delete{resource}", id=missing)

    for error in (update, delete):
        _assert_resource_info(expect(error, grpc.StatusCode.NOT_FOUND), resource, missing)
    assert_serving(api)


def test_deleted_resource_is_not_found(api):
    dataset = api.create("Dataset")
    api.call("Dataset", "DeleteDataset", id=dataset.id)

    for error in (
        rpc_error(api.call, "Dataset", "GetDataset", id=dataset.id),
        rpc_error(api.call, "Dataset", "DeleteDataset", id=dataset.id),
    ):
        _assert_resource_info(expect(error, grpc.StatusCode.NOT_FOUND), "Dataset", dataset.id)


def test_batch_get_with_one_unknown_id_is_not_found(api):
    known = [api.create("Experiment").id for _ in range(2)]
    missing = str(uuid.uuid4())

    error = rpc_error(api.call, "Experiment", "BatchGetExperiments", ids=[known[0], missing, known[1]])

    _assert_resource_info(expect(error, grpc.StatusCode.NOT_FOUND), "Experiment", missing)
    assert known[0] not in error.details()
    assert_serving(api)


# --------------------------------------------------------------------------- ALREADY_EXISTS


def _twice(resource: str, *keys: str, **fixed: Any) -> Callable[[Any], Any]:
    """Create ``resource`` twice with the same values of ``keys`` (its unique rule)."""

    def scenario(api: Any) -> Any:
        first = api.create(resource, **fixed)
        return api.create(resource, **{**fixed, **{key: getattr(first, key) for key in keys}})

    return scenario


def _rename_to_sibling(api: Any) -> Any:
    first = api.create("Dataset")
    second = api.create("Dataset", workflow_id=first.workflow_id)
    return api.call(
        "Dataset",
        "UpdateDataset",
        dataset=message("Dataset", id=second.id, name=first.name),
        update_mask={"paths": ["name"]},
    )


def _inline_duplicate_versions(api: Any) -> Any:
    sample = api.sample("Dataset")
    sample.versions.add(storage_path="gs://b/1", version=1)
    sample.versions.add(storage_path="gs://b/2", version=1)
    return api.call("Dataset", "CreateDataset", dataset=sample)


ALREADY_EXISTS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "dataset name in a workflow": (_twice("Dataset", "workflow_id", "name"), "name"),
    "model name in a workflow": (_twice("Model", "workflow_id", "name"), "name"),
    "experiment name in a workflow": (_twice("Experiment", "workflow_id", "name"), "name"),
    "endpoint name in a model": (_twice("Endpoint", "model_id", "name"), "name"),
    "cloud run service name": (_twice("CloudRunService", "project_id", "region", "name"), "name"),
    "service deployment revision": (_twice("ServiceDeployment", "cloud_run_service_id", "revision"), "revision"),
    "explicit dataset version": (_twice("DatasetVersion", "dataset_id", "version"), "version"),
    "explicit model version": (_twice("ModelVersion", "model_id", "version", version=3), "version"),
    "rename to a sibling's name": (_rename_to_sibling, "name"),
    "inline versions with one number": (_inline_duplicate_versions, "version"),
}


@pytest.mark.parametrize("cause", list(ALREADY_EXISTS.values()), ids=list(ALREADY_EXISTS))
def test_already_exists(api, cause):
    scenario, column = cause

    error = rpc_error(scenario, api)

    expect(error, grpc.StatusCode.ALREADY_EXISTS)
    assert column in error.details(), f"the message does not say which rule: {error.details()}"
    assert_serving(api)


def test_same_name_under_another_parent_is_not_a_conflict(api):
    first = api.create("Dataset")

    second = api.create("Dataset", name=first.name)

    assert second.name == first.name and second.workflow_id != first.workflow_id


def test_failed_inline_create_leaves_nothing(api, rows):
    sample = api.sample("Dataset")
    sample.versions.add(storage_path="gs://b/1", version=2)
    sample.versions.add(storage_path="gs://b/2", version=2)

    expect(rpc_error(api.call, "Dataset", "CreateDataset", dataset=sample), grpc.StatusCode.ALREADY_EXISTS)

    assert rows.Dataset.select().where(rows.Dataset.name == sample.name).count() == 0


# --------------------------------------------------------------------------- FAILED_PRECONDITION


def _unknown_parent(resource: str, field: str) -> Callable[[Any], tuple[Any, str]]:
    def scenario(api: Any) -> tuple[Any, str]:
        missing = str(uuid.uuid4())
        return (lambda: api.create(resource, **{field: missing})), missing

    return scenario


def _update_to_unknown_training_job(api: Any) -> tuple[Any, str]:
    version = api.create("ModelVersion")
    missing = str(uuid.uuid4())
    return (
        lambda: api.call(
            "ModelVersion",
            "UpdateModelVersion",
            model_version=message("ModelVersion", id=version.id, training_job_id=missing),
            update_mask={"paths": ["training_job_id"]},
        )
    ), missing


def _batch_with_unknown_parent(api: Any) -> tuple[Any, str]:
    missing = str(uuid.uuid4())
    good = api.sample("Experiment")
    bad = api.sample("Experiment", workflow_id=missing)
    requests = [message("CreateExperimentRequest", experiment=e) for e in (good, bad)]
    return (lambda: api.call("Experiment", "BatchCreateExperiments", requests=requests)), missing


FAILED_PRECONDITION: dict[str, tuple[Callable[[Any], tuple[Any, str]], str]] = {
    "dataset of an unknown workflow": (_unknown_parent("Dataset", "workflow_id"), "workflow_id"),
    "version of an unknown dataset": (_unknown_parent("DatasetVersion", "dataset_id"), "dataset_id"),
    "version of an unknown model": (_unknown_parent("ModelVersion", "model_id"), "model_id"),
    "job of an unknown dataset": (_unknown_parent("TrainingJob", "dataset_id"), "dataset_id"),
    "prediction of an unknown endpoint": (_unknown_parent("Prediction", "endpoint_id"), "endpoint_id"),
    "prediction of an unknown model version": (_unknown_parent("Prediction", "model_version_id"), "model_version_id"),
    "deployment of an unknown model version": (_unknown_parent("Deployment", "model_version_id"), "model_version_id"),
    "service deployment of an unknown service": (
        _unknown_parent("ServiceDeployment", "cloud_run_service_id"),
        "cloud_run_service_id",
    ),
    "model version of an unknown training job": (_unknown_parent("ModelVersion", "training_job_id"), "training_job_id"),
    "update to an unknown training job": (_update_to_unknown_training_job, "training_job_id"),
    "batch item of an unknown workflow": (_batch_with_unknown_parent, "workflow_id"),
}


@pytest.mark.parametrize("cause", list(FAILED_PRECONDITION.values()), ids=list(FAILED_PRECONDITION))
def test_unknown_parent_is_failed_precondition(api, cause):
    scenario, field = cause
    call, missing = scenario(api)

    error = rpc_error(call)

    expect(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert missing in error.details(), error.details()
    assert field in error.details(), error.details()
    assert_serving(api)


# --------------------------------------------------------------------------- ABORTED


@pytest.mark.parametrize("resource", ["Workflow", "Dataset", "Prediction", "CloudRunService"])
def test_stale_etag_is_aborted(api, resource):
    field, value = UPDATES[resource]
    singular = RESOURCES[resource].singular
    created = api.create(resource)

    def update(etag: str, new_value: Any) -> Any:
        return api.call(
            resource,
            f"Update{resource}",
            **{singular: message(resource, id=created.id, etag=etag, **{field: new_value})},
            update_mask={"paths": [field]},
        )

    updated = update(created.etag, value)
    assert updated.etag and updated.etag != created.etag

    error = rpc_error(update, created.etag, value + "-late")

    expect(error, grpc.StatusCode.ABORTED)
    current = api.call(resource, f"Get{resource}", id=created.id)
    assert getattr(current, field) == value
    assert current.etag == updated.etag
    assert_serving(api)


def test_an_update_without_an_etag_makes_the_old_etag_stale(api: Any) -> None:
    workflow = api.create("Workflow")
    api.call("Workflow", "UpdateWorkflow", workflow=message("Workflow", id=workflow.id, description="a"),
             update_mask={"paths": ["description"]})
    stale = message("Workflow", id=workflow.id, description="b", etag=workflow.etag)
    error = rpc_error(api.call, "Workflow", "UpdateWorkflow", workflow=stale, update_mask={"paths": ["description"]})
    expect(error, grpc.StatusCode.ABORTED)
    assert api.call("Workflow", "GetWorkflow", id=workflow.id).description == "a"


@pytest.mark.parametrize("resource", ["Workflow", "Dataset", "Prediction"])
def test_delete_with_stale_etag_is_aborted(api, resource):
    field, value = UPDATES[resource]
    singular = RESOURCES[resource].singular
    created = api.create(resource)
    updated = api.call(
        resource,
        f"Update{resource}",
        **{singular: message(resource, id=created.id, **{field: value})},
        update_mask={"paths": [field]},
    )

    error = rpc_error(api.call, resource, f"Delete{resource}", id=created.id, etag=created.etag)

    expect(error, grpc.StatusCode.ABORTED)
    assert api.call(resource, f"Get{resource}", id=created.id) == updated
    api.call(resource, f"Delete{resource}", id=created.id, etag=updated.etag)
    gone = rpc_error(api.call, resource, f"Get{resource}", id=created.id)
    _assert_resource_info(expect(gone, grpc.StatusCode.NOT_FOUND), resource, created.id)


def test_delete_unknown_id_with_allow_missing_is_not_an_error(api):
    missing = str(uuid.uuid4())

    api.call("Dataset", "DeleteDataset", id=missing, allow_missing=True)

    # Nothing was made under that id either.
    _assert_resource_info(expect(rpc_error(api.call, "Dataset", "GetDataset", id=missing), grpc.StatusCode.NOT_FOUND),
                          "Dataset", missing)
    assert_serving(api)


# --------------------------------------------------------------------------- DEADLINE_EXCEEDED, UNIMPLEMENTED


def test_passed_client_deadline_is_deadline_exceeded(api):
    request = message("ListWorkflowsRequest", page_size=1000)

    error = rpc_error(api.stub("Workflow").ListWorkflows, request, timeout=1e-6)

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert_serving(api)


@pytest.mark.parametrize(
    "path",
    [
        "/versatil.ml.v1.DatasetService/FrobnicateDataset",
        "/versatil.ml.v1.DatasetService/GetWorkflow",
        "/versatil.ml.v1.DatasetService/getDataset",
        "/versatil.ml.v1.NoSuchService/GetDataset",
        "/versatil.ml.v2.DatasetService/GetDataset",
    ],
)
def test_unknown_method_is_unimplemented(api, path):
    request = message("GetDatasetRequest", id=str(uuid.uuid4())).SerializeToString()

    error = rpc_error(raw(api, path), request)

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert_serving(api)


# --------------------------------------------------------------------------- forward compatibility

UNKNOWN_FIELDS = (
    field_bytes(9001, 0, b"\x2a")  # varint 42
    + field_bytes(9002, 2, b"\x05hello")  # length-delimited
    + field_bytes(9003, 5, b"\x00\x00\x80\x3f")  # fixed32
    + field_bytes(9004, 1, b"\x00" * 8)  # fixed64
)


def test_unknown_fields_in_a_request_are_ignored(api):
    dataset = api.create("Dataset")
    request = message("GetDatasetRequest", id=dataset.id).SerializeToString()

    response = raw(api, service_path("Dataset", "GetDataset"))(request + UNKNOWN_FIELDS)

    assert type(dataset).FromString(response) == dataset


def test_unknown_fields_inside_the_resource_are_ignored(api):
    sample = api.sample("Workflow", name=unique("fwd"), description="from the future")
    inner = sample.SerializeToString() + UNKNOWN_FIELDS
    request = message("CreateWorkflowRequest")
    request.workflow.MergeFromString(inner)

    response = raw(api, service_path("Workflow", "CreateWorkflow"))(request.SerializeToString() + UNKNOWN_FIELDS)

    created = type(sample).FromString(response)
    assert created.id and created.name == sample.name and created.description == "from the future"
    assert created.config == sample.config
    assert api.call("Workflow", "GetWorkflow", id=created.id) == created


def test_unknown_fields_in_a_list_request_are_ignored(api):
    dataset = api.create("Dataset")
    request = message("ListDatasetsRequest", filter=f'id = "{dataset.id}"').SerializeToString()

    response = raw(api, service_path("Dataset", "ListDatasets"))(UNKNOWN_FIELDS + request)

    listed = message("ListDatasetsResponse")
    listed.MergeFromString(response)
    assert list(listed.datasets) == [dataset]

