"""The contract of API.md and SCHEMA.md, checked through a real channel for all 13 resources.

Parametrised tests run once per resource (``sorted(RESOURCES)``) or once per rule of the schema
(parent relations, unique rules, defaults); focused tests cover what only some resources have
(nested creates, version numbers, SET NULL). Every test creates its own rows with unique names.

    .venv/bin/python -m pytest -q tests/test_contract.py -k Dataset
"""
from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from server.rpc.auth import DEV_PRINCIPAL
from tests.support import (
    RESOURCES, UPDATES, assert_invalid, bad_request_fields, error_details, message, refused, rpc_error, unique,
)

Code = grpc.StatusCode
ALL = sorted(RESOURCES)
OUTPUT_ONLY = ("id", "created_at", "updated_at", "etag")
NUMBERED = ("DatasetVersion", "ModelVersion")
NAN = float("nan")
STRUCT = "google.protobuf.Struct"

# Every (parent, child, foreign key) whose deletion cascades, read from the declarations.
_NAMES = {spec.model: name for name, spec in RESOURCES.items()}
RELATIONS = [
    (_NAMES[fk.rel_model], child, key)
    for child in ALL
    for key, fk in RESOURCES[child].parents.items()
]
PARENT_OF = {(child, key): parent for parent, child, key in RELATIONS}


def key_to(child: str, parent: str) -> str:
    """The foreign key of ``child`` that points at ``parent``: ``key_to("TrainingJob", "Dataset")``."""
    return next(key for (c, key), p in PARENT_OF.items() if (c, p) == (child, parent))


# The same relations as SCHEMA.md lists them, so that a declaration that lost one is noticed.
SCHEMA_RELATIONS = {
    ("Workflow", "Dataset", "workflow_id"),
    ("Dataset", "DatasetVersion", "dataset_id"),
    ("Workflow", "Model", "workflow_id"),
    ("Model", "ModelVersion", "model_id"),
    ("Workflow", "Experiment", "workflow_id"),
    ("Experiment", "TrainingJob", "experiment_id"),
    ("Dataset", "TrainingJob", "dataset_id"),
    ("Model", "Endpoint", "model_id"),
    ("Endpoint", "Deployment", "endpoint_id"),
    ("ModelVersion", "Deployment", "model_version_id"),
    ("Endpoint", "Prediction", "endpoint_id"),
    ("ModelVersion", "Prediction", "model_version_id"),
    ("CloudRunService", "ServiceDeployment", "cloud_run_service_id"),
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class Service:
    """The standard methods of one resource, called with plain Python arguments."""

    def __init__(self, api: Any, resource: str) -> None:
        self.api, self.resource = api, resource
        self.singular = RESOURCES[resource].singular
        self.plural = RESOURCES[resource].plural

    def _call(self, method: str, **fields: Any) -> Message:
        return self.api.call(self.resource, method, **fields)

    def create(self, resource: Message) -> Message:
        return self._call(f"Create{self.resource}", **{self.singular: resource})

    def get(self, resource_id: str) -> Message:
        return self._call(f"Get{self.resource}", id=resource_id)

    def list(self, filter: str) -> list[Message]:
        response = self._call(f"List{self.resource}s", filter=filter, page_size=1000)
        assert not response.next_page_token, "more than one page of results in a test"
        return list(getattr(response, self.plural))

    def update(self, resource: Message, paths: Iterable[str] | None = None) -> Message:
        fields: dict[str, Any] = {self.singular: resource}
        if paths is not None:
            fields["update_mask"] = field_mask_pb2.FieldMask(paths=list(paths))
        return self._call(f"Update{self.resource}", **fields)

    def delete(self, resource_id: str) -> Message:
        return self._call(f"Delete{self.resource}", id=resource_id)

    def batch_create(self, resources: Iterable[Message]) -> list[Message]:
        requests = [message(f"Create{self.resource}Request", **{self.singular: r}) for r in resources]
        response = self._call(f"BatchCreate{self.resource}s", requests=requests)
        return list(getattr(response, self.plural))

    def batch_get(self, ids: Iterable[str]) -> list[Message]:
        return list(getattr(self._call(f"BatchGet{self.resource}s", ids=list(ids)), self.plural))

    def exists(self, resource_id: str) -> bool:
        try:
            self.get(resource_id)
        except grpc.RpcError as error:
            assert error.code() == Code.NOT_FOUND, error.details()
            return False
        return True


def value_of(resource: Message, field: str) -> Any:
    """A field's value as Python: None when a field with presence is not set, dicts for Structs."""
    descriptor = resource.DESCRIPTOR.fields_by_name[field]
    if descriptor.message_type is not None and descriptor.message_type.full_name == STRUCT:
        # An empty Struct may travel as "not set"; only a nullable JSON column can be NULL.
        nullable = RESOURCES[resource.DESCRIPTOR.name].fields[field].null
        if not resource.HasField(field):
            return None if nullable else {}
        return json_format.MessageToDict(getattr(resource, field))
    if descriptor.has_presence and not resource.HasField(field):
        return None
    return getattr(resource, field)


def enum(resource: str, field: str, short: str) -> int:
    """The number of an enum value by its short name: ``enum("Workflow", "status", "DRAFT")``."""
    enum_type = RESOURCES[resource].message.DESCRIPTOR.fields_by_name[field].enum_type
    return next(v.number for v in enum_type.values if v.name.endswith(f"_{short}"))


def nanos(timestamp: timestamp_pb2.Timestamp) -> int:
    return timestamp.ToNanoseconds()


def same_except_update_stamps(actual: Message, expected: Message) -> None:
    """``actual`` equals ``expected`` in every field but updated_at and etag."""
    expected = type(expected).FromString(expected.SerializeToString())
    expected.updated_at.CopyFrom(actual.updated_at)
    expected.etag = actual.etag
    assert actual == expected


def unsaved_copy(resource: Message, **changes: Any) -> Message:
    """A copy of ``resource`` with ``changes`` applied; a change to None clears the field."""
    copy = type(resource).FromString(resource.SerializeToString())
    for field, value in changes.items():
        if value is None:
            copy.ClearField(field)
        elif isinstance(value, (list, dict)):
            copy.ClearField(field)
            copy.MergeFrom(type(resource)(**{field: value}))
        else:
            setattr(copy, field, value)
    return copy


def sample_without(api: Any, resource: str, *fields: str) -> Message:
    """A valid unsaved resource with ``fields`` left unset."""
    sample = api.sample(resource)
    for field in fields:
        sample.ClearField(field)
    return sample


def parent_ids(resource: Message) -> dict[str, str]:
    return {key: getattr(resource, key) for key in RESOURCES[resource.DESCRIPTOR.name].parents}


def descendants(root: str) -> set[str]:
    """The resources that a delete of ``root`` removes, through cascades of any depth."""
    found: set[str] = set()
    frontier = {root}
    while frontier:
        frontier = {child for parent, child, _ in RELATIONS if parent in frontier} - found
        found |= frontier
    return found


def fresh_id() -> str:
    """A well-formed id that names no resource."""
    return str(uuid.uuid4())


@pytest.fixture
def svc(api: Any) -> Callable[[str], Service]:
    return lambda resource: Service(api, resource)


# --------------------------------------------------------------------------------------------
# 1. Create and Get
# --------------------------------------------------------------------------------------------


def test_relations_match_schema() -> None:
    assert set(RELATIONS) == SCHEMA_RELATIONS


@pytest.mark.parametrize("resource", ALL)
def test_create_returns_the_stored_resource(api: Any, svc: Any, resource: str) -> None:
    client_id = fresh_id()
    long_ago = timestamp_pb2.Timestamp(seconds=946684800)
    sent = api.sample(resource)
    request = unsaved_copy(sent, id=client_id, etag="client-etag")
    request.created_at.CopyFrom(long_ago)
    request.updated_at.CopyFrom(long_ago)
    before = datetime.datetime.now(datetime.timezone.utc)

    created = svc(resource).create(request)

    assert created.id != client_id
    assert uuid.UUID(created.id).version == 7
    assert str(uuid.UUID(created.id)) == created.id
    assert created.created_at == created.updated_at
    stamp = created.created_at.ToDatetime(tzinfo=datetime.timezone.utc)
    assert abs((stamp - before).total_seconds()) < 60
    assert created.etag and created.etag != "client-etag"
    for descriptor, value in sent.ListFields():
        if descriptor.name != "created_by":
            assert getattr(created, descriptor.name) == value, descriptor.name
    if "created_by" in RESOURCES[resource].fields:  # The caller's principal, whatever the request said.
        assert created.created_by == DEV_PRINCIPAL != request.created_by
    assert svc(resource).get(created.id) == created
    assert not svc(resource).exists(client_id)


# The server defaults of SCHEMA.md, by resource: field -> value when omitted (enums by short name).
DEFAULTS: dict[str, dict[str, Any]] = {
    "Workflow": {"status": "DRAFT", "description": None, "n8n_workflow_id": None, "config": {}},
    "Dataset": {"size": 0, "format": "", "metadata": {}, "description": None},
    "DatasetVersion": {"size": 0, "checksum": "", "metadata": {}, "version": 1},
    "Model": {"description": None},
    "ModelVersion": {"status": "REGISTERED", "size": 0, "metrics": {}, "version": 1,
                     "training_duration": None, "training_job_id": None},
    "Experiment": {"status": "DRAFT", "hyperparameters": {}, "objective_metric": None},
    "TrainingJob": {"status": "PENDING", "accelerator_count": 0, "metrics": {}, "vertex_job_id": None},
    "Endpoint": {"status": "CREATING", "url": None},
    "Deployment": {"status": "PENDING", "traffic_split": 0, "min_replicas": 1, "max_replicas": 1},
    "Prediction": {"status": "PENDING", "latency": 0, "confidence": None, "output": None},
    "PatternRecognitionJob": {"status": "PENDING", "patterns_found": 0, "config": {}, "results": {}},
    "CloudRunService": {"status": "CREATING", "min_instances": 0, "max_instances": 1, "env": {}, "cpu": None},
    "ServiceDeployment": {"status": "PENDING", "traffic_percent": 0, "config": {}},
}


def expected_value(resource: str, field: str, value: Any) -> Any:
    descriptor = RESOURCES[resource].message.DESCRIPTOR.fields_by_name[field]
    return enum(resource, field, value) if descriptor.enum_type and isinstance(value, str) else value


@pytest.mark.parametrize("resource", ALL)
def test_create_applies_defaults_to_omitted_fields(api: Any, svc: Any, resource: str) -> None:
    defaults = DEFAULTS[resource]
    created = svc(resource).create(sample_without(api, resource, *defaults))
    for field, default in defaults.items():
        expected = expected_value(resource, field, default)
        assert value_of(created, field) == expected, field
    assert svc(resource).get(created.id) == created


@pytest.mark.parametrize(
    ("resource", "field", "value"),
    [
        ("CloudRunService", "max_instances", 0),
        ("CloudRunService", "min_instances", 0),
        ("Prediction", "confidence", 0.0),
        ("Prediction", "latency", 0),
        ("TrainingJob", "accelerator_count", 0),
        ("Workflow", "description", ""),
    ],
)
def test_create_keeps_explicit_zero(api: Any, svc: Any, resource: str, field: str, value: Any) -> None:
    created = svc(resource).create(api.sample(resource, **{field: value}))
    assert created.HasField(field) and getattr(created, field) == value
    fetched = svc(resource).get(created.id)
    assert fetched.HasField(field) and getattr(fetched, field) == value


# --------------------------------------------------------------------------------------------
# 2. List and BatchGet
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ALL)
def test_list_filters_by_id(api: Any, svc: Any, resource: str) -> None:
    created = api.create(resource)
    api.create(resource)
    assert svc(resource).list(f'id = "{created.id}"') == [created]


@pytest.mark.parametrize("resource", ALL)
def test_batch_get_keeps_the_order_of_ids(api: Any, svc: Any, resource: str) -> None:
    first, second = api.create(resource), api.create(resource)
    found = svc(resource).batch_get([second.id, first.id, second.id])
    assert found == [second, first, second]


@pytest.mark.parametrize("resource", ALL)
def test_batch_get_with_an_unknown_id_is_not_found(api: Any, svc: Any, resource: str) -> None:
    known, unknown = api.create(resource), fresh_id()
    error = refused(lambda: svc(resource).batch_get([known.id, unknown]), Code.NOT_FOUND, unknown)
    info = error_details(error, error_details_pb2.ResourceInfo)
    assert info and info[0].resource_type == resource and unknown in info[0].resource_name


def update_by_id(service: Service, resource_id: str) -> Message:
    field, value = UPDATES[service.resource]
    return service.update(message(service.resource, id=resource_id, **{field: value}), [field])


# The methods that take an id: method -> (call with one id, the field naming a malformed id).
ID_CALLS: dict[str, tuple[Callable[[Service, str], Any], Callable[[Service], str]]] = {
    "Get": (Service.get, lambda s: "id"),
    "Delete": (Service.delete, lambda s: "id"),
    "BatchGet": (lambda s, i: s.batch_get([i]), lambda s: "ids[0]"),
    "Update": (update_by_id, lambda s: f"{s.singular}.id"),
}


@pytest.mark.parametrize("method", sorted(ID_CALLS))
@pytest.mark.parametrize("resource", ALL)
def test_unknown_id_is_not_found(svc: Any, resource: str, method: str) -> None:
    call, _ = ID_CALLS[method]
    unknown = fresh_id()
    error = refused(lambda: call(svc(resource), unknown), Code.NOT_FOUND, unknown)
    info = error_details(error, error_details_pb2.ResourceInfo)
    assert info and info[0].resource_type == resource


@pytest.mark.parametrize("method", sorted(ID_CALLS))
@pytest.mark.parametrize("resource", ALL)
def test_malformed_id_is_invalid(svc: Any, resource: str, method: str) -> None:
    call, field = ID_CALLS[method]
    service = svc(resource)
    assert_invalid(rpc_error(lambda: call(service, "not-a-uuid")), field(service), "not-a-uuid")


# --------------------------------------------------------------------------------------------
# 3. Update
# --------------------------------------------------------------------------------------------

# A second field per resource, changed in the request but left out of the mask.
DECOYS: dict[str, tuple[str, Any]] = {
    "Workflow": ("created_by", "decoy"),
    "Dataset": ("storage_path", "gs://decoy"),
    "DatasetVersion": ("storage_path", "gs://decoy"),
    "Model": ("framework", 3),
    "ModelVersion": ("storage_path", "gs://decoy"),
    "Experiment": ("description", "decoy"),
    "TrainingJob": ("machine_type", "decoy"),
    "Endpoint": ("description", "decoy"),
    "Deployment": ("traffic_split", 50),
    "Prediction": ("latency", 99),
    "PatternRecognitionJob": ("patterns_found", 3),
    "CloudRunService": ("image", "gcr.io/p/decoy"),
    "ServiceDeployment": ("traffic_percent", 40),
}


def assert_updated(before: Message, after: Message, expected: Message) -> None:
    same_except_update_stamps(after, expected)
    assert after.created_at == before.created_at
    assert nanos(after.updated_at) > nanos(before.updated_at)
    assert after.etag and after.etag != before.etag


@pytest.mark.parametrize("resource", ALL)
def test_update_changes_only_the_masked_fields(api: Any, svc: Any, resource: str) -> None:
    field, value = UPDATES[resource]
    decoy, decoy_value = DECOYS[resource]
    created = api.create(resource)
    request = unsaved_copy(created, **{field: value, decoy: decoy_value})

    updated = svc(resource).update(request, [field])

    assert_updated(created, updated, unsaved_copy(created, **{field: value}))
    assert svc(resource).get(created.id) == updated


@pytest.mark.parametrize("resource", ALL)
def test_update_with_empty_mask_changes_the_fields_set(api: Any, svc: Any, resource: str) -> None:
    field, value = UPDATES[resource]
    created = api.create(resource)

    updated = svc(resource).update(message(resource, id=created.id, **{field: value}))

    assert_updated(created, updated, unsaved_copy(created, **{field: value}))
    assert svc(resource).get(created.id) == updated


@pytest.mark.parametrize(
    ("resource", "field", "value", "cleared"),
    [
        ("Workflow", "description", "text", None),
        ("Dataset", "size", 10, 0),
        ("Dataset", "format", "parquet", ""),
        ("Dataset", "metadata", {"k": "v"}, {}),
        ("ModelVersion", "training_duration", 100, None),
        ("TrainingJob", "accelerator_count", 4, 0),
        ("Deployment", "min_replicas", 2, 1),
        ("Prediction", "confidence", 0.7, None),
        ("Prediction", "output", {"y": 1}, None),
        ("CloudRunService", "max_instances", 5, 1),
        ("CloudRunService", "cpu", "2", None),
        ("ServiceDeployment", "traffic_percent", 30, 0),
    ],
)
def test_update_clears_a_masked_field_left_unset(
    api: Any, svc: Any, resource: str, field: str, value: Any, cleared: Any
) -> None:
    created = api.create(resource, **{field: expected_value(resource, field, value)})
    assert value_of(created, field) == expected_value(resource, field, value)

    updated = svc(resource).update(message(resource, id=created.id), [field])

    assert value_of(updated, field) == expected_value(resource, field, cleared)
    assert_updated(created, unsaved_copy(updated, **{field: None}), unsaved_copy(created, **{field: None}))
    assert svc(resource).get(created.id) == updated


# Fields no update may name: the output-only ones, every parent id, version numbers, and
# created_by (stamped from the caller's principal).
IMMUTABLE = [
    (resource, path)
    for resource in ALL
    for path in (*OUTPUT_ONLY, *RESOURCES[resource].parents, *(("version",) if resource in NUMBERED else ()),
                 *(("created_by",) if "created_by" in RESOURCES[resource].fields else ()))
]


@pytest.mark.parametrize(("resource", "path"), IMMUTABLE)
def test_update_naming_an_immutable_field_is_invalid(api: Any, svc: Any, resource: str, path: str) -> None:
    created = api.create(resource)
    assert_invalid(rpc_error(lambda: svc(resource).update(created, [path])), "update_mask", path)
    assert svc(resource).get(created.id) == created


@pytest.mark.parametrize(
    ("resource", "path"),
    [*((r, "no_such_field") for r in ALL), ("Dataset", "versions"), ("Model", "versions"),
     ("Endpoint", "deployments")],
)
def test_update_naming_an_unknown_field_is_invalid(api: Any, svc: Any, resource: str, path: str) -> None:
    created = api.create(resource)
    assert_invalid(rpc_error(lambda: svc(resource).update(created, [path])), "update_mask", path)
    assert svc(resource).get(created.id) == created


@pytest.mark.parametrize("resource", ALL)
def test_update_checks_the_etag(api: Any, svc: Any, resource: str) -> None:
    field, value = UPDATES[resource]
    created = api.create(resource)
    current = unsaved_copy(created, **{field: value})  # It carries the etag of the create.
    updated = svc(resource).update(current, [field])
    assert getattr(updated, field) == value and updated.etag != created.etag

    stale = unsaved_copy(created, **{field: value + "-stale"})
    refused(lambda: svc(resource).update(stale, [field]), Code.ABORTED)
    assert svc(resource).get(created.id) == updated


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        ("Dataset", "name"),
        ("Dataset", "type"),
        ("Dataset", "storage_path"),
        ("Workflow", "name"),
        ("Model", "framework"),
        ("DatasetVersion", "storage_path"),
        ("Deployment", "machine_type"),
        ("Prediction", "input"),
        ("CloudRunService", "region"),
        ("ServiceDeployment", "revision"),
        ("PatternRecognitionJob", "pattern_type"),
    ],
)
def test_update_clearing_a_required_field_is_invalid(api: Any, svc: Any, resource: str, field: str) -> None:
    created = api.create(resource)
    assert_invalid(rpc_error(lambda: svc(resource).update(message(resource, id=created.id), [field])), field)
    assert svc(resource).get(created.id) == created


def test_update_to_an_unknown_training_job_is_a_failed_precondition(api: Any, svc: Any) -> None:
    version = api.create("ModelVersion")
    unknown = fresh_id()
    request = message("ModelVersion", id=version.id, training_job_id=unknown)
    refused(lambda: svc("ModelVersion").update(request, ["training_job_id"]),
            Code.FAILED_PRECONDITION, "training_job_id")
    assert svc("ModelVersion").get(version.id) == version


def test_update_into_a_taken_name_already_exists(api: Any, svc: Any) -> None:
    first = api.create("Dataset")
    second = api.create("Dataset", workflow_id=first.workflow_id)
    rename = message("Dataset", id=second.id, name=first.name)
    refused(lambda: svc("Dataset").update(rename, ["name"]), Code.ALREADY_EXISTS, "workflow_id", "name")
    assert svc("Dataset").get(second.id) == second


def test_update_with_allow_missing_creates_then_updates(api: Any, svc: Any) -> None:
    client_id = str(uuid.uuid4())
    owner = unique("owner")
    workflow = message("Workflow", id=client_id, name="upserted", n8n_workflow_id=owner, description="first")
    created = api.call("Workflow", "UpdateWorkflow", workflow=workflow, allow_missing=True)
    assert created.id == client_id and created.description == "first" and created.etag
    assert api.call("Workflow", "GetWorkflow", id=client_id) == created

    workflow.description = "second"
    updated = api.call("Workflow", "UpdateWorkflow", workflow=workflow, allow_missing=True,
                       update_mask=field_mask_pb2.FieldMask(paths=["description"]))
    assert updated.id == client_id and updated.description == "second" and updated.etag != created.etag
    assert updated.created_at == created.created_at
    assert [w.id for w in svc("Workflow").list(f'n8n_workflow_id = "{owner}"')] == [client_id]


def test_update_without_allow_missing_is_not_found(api: Any) -> None:
    workflow = message("Workflow", id=str(uuid.uuid4()), name="x", created_by="tests")
    refused(lambda: api.call("Workflow", "UpdateWorkflow", workflow=workflow), Code.NOT_FOUND)


def test_update_allow_missing_creates_a_child_under_its_parent(api: Any) -> None:
    dataset = api.create("Dataset")
    client_id = str(uuid.uuid4())
    version = message("DatasetVersion", id=client_id, dataset_id=dataset.id, storage_path="gs://b/v")
    created = api.call("DatasetVersion", "UpdateDatasetVersion", dataset_version=version, allow_missing=True)
    assert created.id == client_id and created.version == 1 and created.dataset_id == dataset.id


# --------------------------------------------------------------------------------------------
# 4. Delete
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ALL)
def test_delete_removes_the_resource(api: Any, svc: Any, resource: str) -> None:
    service = svc(resource)
    kept, doomed = api.create(resource), api.create(resource)
    service.delete(doomed.id)
    refused(lambda: service.get(doomed.id), Code.NOT_FOUND, doomed.id)
    refused(lambda: service.delete(doomed.id), Code.NOT_FOUND, doomed.id)
    assert service.get(kept.id) == kept


@pytest.mark.parametrize("resource", ["Workflow", "Prediction", "ServiceDeployment"])
def test_delete_with_allow_missing_on_an_unknown_id_succeeds(api: Any, resource: str) -> None:
    unknown = str(uuid.uuid4())
    api.call(resource, f"Delete{resource}", id=unknown, allow_missing=True)
    refused(lambda: api.call(resource, f"Delete{resource}", id=unknown), Code.NOT_FOUND)


# --------------------------------------------------------------------------------------------
# 5. BatchCreate
# --------------------------------------------------------------------------------------------


def siblings(api: Any, resource: str, count: int) -> list[Message]:
    """``count`` valid unsaved resources under the same parents, told apart by UPDATES' field."""
    parents = parent_ids(api.sample(resource))
    field, value = UPDATES[resource]
    return [api.sample(resource, **parents, **{field: f"{value}-{i}"}) for i in range(count)]


def count_under(svc: Any, resource: str, parent: Message) -> int:
    """How many ``resource`` rows have ``parent``'s parent ids (all of them, for a root)."""
    ids = parent_ids(parent)
    return len(svc(resource).list(" AND ".join(f'{key} = "{value}"' for key, value in ids.items())))


@pytest.mark.parametrize("resource", [r for r in ALL if RESOURCES[r].parents])
def test_batch_create_returns_all_in_order(api: Any, svc: Any, resource: str) -> None:
    items = siblings(api, resource, 3)
    field, _ = UPDATES[resource]

    created = svc(resource).batch_create(items)

    assert [getattr(c, field) for c in created] == [getattr(i, field) for i in items]
    assert len({c.id for c in created}) == 3
    assert all(uuid.UUID(c.id).version == 7 for c in created)
    if resource in NUMBERED:
        assert [c.version for c in created] == [1, 2, 3]
    assert svc(resource).batch_get([c.id for c in created]) == created
    assert count_under(svc, resource, items[0]) == 3


@pytest.mark.parametrize("resource", [r for r in ALL if not RESOURCES[r].parents])
def test_batch_create_of_roots_returns_all_in_order(api: Any, svc: Any, resource: str) -> None:
    items = siblings(api, resource, 3)
    created = svc(resource).batch_create(items)
    assert [c.name for c in created] == [i.name for i in items]
    assert svc(resource).batch_get([c.id for c in created]) == created


# How the third item of a batch is broken: resource, changes from the first item, code, field.
BATCH_FAILURES: dict[str, tuple[str, Callable[[Message], dict[str, Any]], grpc.StatusCode, str]] = {
    "missing-name": ("Dataset", lambda first: {"name": ""}, Code.INVALID_ARGUMENT, "name"),
    "missing-type": ("Dataset", lambda first: {"type": 0}, Code.INVALID_ARGUMENT, "type"),
    "unknown-parent": ("Dataset", lambda first: {"workflow_id": fresh_id()}, Code.FAILED_PRECONDITION,
                       "workflow_id"),
    "duplicate-name": ("Dataset", lambda first: {"name": first.name}, Code.ALREADY_EXISTS, "name"),
    "duplicate-version": ("DatasetVersion", lambda first: {"version": 1}, Code.ALREADY_EXISTS, "version"),
    "bad-confidence": ("Prediction", lambda first: {"confidence": 1.5}, Code.INVALID_ARGUMENT, "confidence"),
    "unknown-endpoint": ("Prediction", lambda first: {"endpoint_id": fresh_id()}, Code.FAILED_PRECONDITION,
                         "endpoint_id"),
}


@pytest.mark.parametrize("case", sorted(BATCH_FAILURES))
def test_batch_create_is_all_or_nothing(api: Any, svc: Any, case: str) -> None:
    resource, breaker, code, field = BATCH_FAILURES[case]
    items = siblings(api, resource, 4)
    items[2] = unsaved_copy(items[2], **breaker(items[0]))

    error = refused(lambda: svc(resource).batch_create(items), code, "requests[2]", field)

    if code == Code.INVALID_ARGUMENT:
        assert f"requests[2].{field}" in bad_request_fields(error)
    assert count_under(svc, resource, items[0]) == 0


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_create_size_out_of_range_is_invalid(api: Any, svc: Any, count: int) -> None:
    source = unique("gs://batch/")
    items = [api.sample("PatternRecognitionJob", source_uri=source)] * count
    assert_invalid(rpc_error(lambda: svc("PatternRecognitionJob").batch_create(items)), "requests", str(count))
    assert svc("PatternRecognitionJob").list(f'source_uri = "{source}"') == []


def test_batch_create_of_1000_items_is_accepted(api: Any, svc: Any) -> None:
    source = unique("gs://batch/")
    items = [message("PatternRecognitionJob", name=f"job-{i}", pattern_type=1, source_uri=source)
             for i in range(1000)]
    created = svc("PatternRecognitionJob").batch_create(items)
    assert [c.name for c in created] == [f"job-{i}" for i in range(1000)]
    assert len(svc("PatternRecognitionJob").list(f'source_uri = "{source}"')) == 1000


# --------------------------------------------------------------------------------------------
# 6, 7. Cascades and SET NULL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("parent", "child", "key"), RELATIONS)
def test_deleting_a_parent_deletes_its_children(
    api: Any, svc: Any, parent: str, child: str, key: str
) -> None:
    doomed = api.create(child)
    other_parents = {k: v for k, v in parent_ids(doomed).items() if k != key}

    svc(parent).delete(getattr(doomed, key))

    refused(lambda: svc(child).get(doomed.id), Code.NOT_FOUND)
    for other_key, other_id in other_parents.items():
        assert svc(PARENT_OF[(child, other_key)]).exists(other_id), other_key


def build_tree(api: Any) -> dict[str, Message]:
    """One resource of each kind, all under one workflow (and one Cloud Run service)."""
    tree = {"Workflow": api.create("Workflow")}
    tree["Dataset"] = api.create("Dataset", workflow_id=tree["Workflow"].id)
    tree["DatasetVersion"] = api.create("DatasetVersion", dataset_id=tree["Dataset"].id)
    tree["Model"] = api.create("Model", workflow_id=tree["Workflow"].id)
    tree["ModelVersion"] = api.create("ModelVersion", model_id=tree["Model"].id)
    tree["Experiment"] = api.create("Experiment", workflow_id=tree["Workflow"].id)
    tree["TrainingJob"] = api.create(
        "TrainingJob", experiment_id=tree["Experiment"].id, dataset_id=tree["Dataset"].id
    )
    tree["Endpoint"] = api.create("Endpoint", model_id=tree["Model"].id)
    served = {"endpoint_id": tree["Endpoint"].id, "model_version_id": tree["ModelVersion"].id}
    tree["Deployment"] = api.create("Deployment", **served)
    tree["Prediction"] = api.create("Prediction", **served)
    tree["CloudRunService"] = api.create("CloudRunService")
    tree["ServiceDeployment"] = api.create(
        "ServiceDeployment", cloud_run_service_id=tree["CloudRunService"].id
    )
    tree["PatternRecognitionJob"] = api.create("PatternRecognitionJob")
    assert set(tree) == set(ALL)
    return tree


@pytest.mark.parametrize("root", ALL)
def test_delete_cascades_through_every_level(api: Any, svc: Any, root: str) -> None:
    tree = build_tree(api)
    gone = descendants(root) | {root}

    svc(root).delete(tree[root].id)

    for resource, row in tree.items():
        assert svc(resource).exists(row.id) == (resource not in gone), resource


@pytest.mark.parametrize("deleted", ["TrainingJob", "Experiment", "Dataset"])
def test_deleting_a_training_job_clears_model_version_training_job_id(
    api: Any, svc: Any, deleted: str
) -> None:
    job = api.create("TrainingJob")
    version = api.create("ModelVersion", training_job_id=job.id)
    assert version.training_job_id == job.id

    doomed = job.id if deleted == "TrainingJob" else getattr(job, key_to("TrainingJob", deleted))
    svc(deleted).delete(doomed)

    refused(lambda: svc("TrainingJob").get(job.id), Code.NOT_FOUND)
    after = svc("ModelVersion").get(version.id)
    assert not after.HasField("training_job_id")
    assert unsaved_copy(after, updated_at=None, etag="") == unsaved_copy(
        version, training_job_id=None, updated_at=None, etag=""
    )


# --------------------------------------------------------------------------------------------
# 8. Unique rules
# --------------------------------------------------------------------------------------------

UNIQUE_RULES = [
    ("Dataset", ("workflow_id", "name")),
    ("Model", ("workflow_id", "name")),
    ("Experiment", ("workflow_id", "name")),
    ("Endpoint", ("model_id", "name")),
    ("DatasetVersion", ("dataset_id", "version")),
    ("ModelVersion", ("model_id", "version")),
    ("CloudRunService", ("project_id", "region", "name")),
    ("ServiceDeployment", ("cloud_run_service_id", "revision")),
]


@pytest.mark.parametrize(
    ("resource", "columns"), UNIQUE_RULES, ids=[f"{r}-{'+'.join(c)}" for r, c in UNIQUE_RULES]
)
def test_unique_conflict_already_exists(
    api: Any, svc: Any, resource: str, columns: tuple[str, ...]
) -> None:
    first = api.create(resource)
    taken = {column: getattr(first, column) for column in columns}
    duplicate = api.sample(resource, **taken)

    refused(lambda: svc(resource).create(duplicate), Code.ALREADY_EXISTS, *columns)

    # The rule is scoped: the same values under another scope are accepted.
    scope, *rest = columns
    elsewhere = {column: taken[column] for column in rest}
    if scope not in RESOURCES[resource].parents:
        elsewhere[scope] = unique("scope")
    other = api.create(resource, **elsewhere)
    assert [getattr(other, column) for column in rest] == [taken[column] for column in rest]


# --------------------------------------------------------------------------------------------
# 9. Parents that are missing, unknown or malformed
# --------------------------------------------------------------------------------------------

# variant -> (the parent id sent, the code); an omitted parent id only for required parents.
PARENT_ERRORS = {
    "unknown": (fresh_id, Code.FAILED_PRECONDITION),
    "malformed": (lambda: "not-a-uuid", Code.INVALID_ARGUMENT),
    "omitted": (lambda: "", Code.INVALID_ARGUMENT),
}
BAD_PARENTS = [
    *((child, key, variant) for _, child, key in RELATIONS for variant in sorted(PARENT_ERRORS)),
    ("ModelVersion", "training_job_id", "unknown"),
    ("ModelVersion", "training_job_id", "malformed"),
]


@pytest.mark.parametrize(("resource", "key", "variant"), BAD_PARENTS)
def test_create_with_a_bad_parent(api: Any, svc: Any, resource: str, key: str, variant: str) -> None:
    make_id, code = PARENT_ERRORS[variant]
    parent_id = make_id()
    sample = api.sample(resource, **{key: parent_id})
    if variant == "omitted":
        sample.ClearField(key)

    error = refused(lambda: svc(resource).create(sample), code, key)

    if code == Code.INVALID_ARGUMENT:
        assert key in bad_request_fields(error)
    if variant != "omitted":
        assert parent_id in error.details()


# --------------------------------------------------------------------------------------------
# 10. Children created inline with their parent
# --------------------------------------------------------------------------------------------

# Parent -> (relation, child resource, a field that marks the children, the child's broken value).
NESTED = {
    "Dataset": ("versions", "DatasetVersion", "storage_path", ("storage_path", "")),
    "Model": ("versions", "ModelVersion", "storage_path", ("size", -1)),
    "Endpoint": ("deployments", "Deployment", "machine_type", ("traffic_split", 101)),
}


def nested_parent(api: Any, resource: str) -> tuple[Message, list[Message]]:
    """A valid unsaved parent with two valid inline children sharing a unique marker value."""
    relation, child, marker, _ = NESTED[resource]
    fields = {marker: unique("mark")}
    if resource == "Endpoint":
        version = api.create("ModelVersion")
        parent = api.sample("Endpoint", model_id=version.model_id)
        fields["model_version_id"] = version.id
    else:
        parent = api.sample(resource)
    sizes = [{"size": 0}, {"size": 7}] if child in NUMBERED else [{}, {}]
    children = [message(child, **fields, **size) for size in sizes]
    getattr(parent, relation).extend(children)
    return parent, children


@pytest.mark.parametrize("resource", sorted(NESTED))
def test_create_with_inline_children(api: Any, svc: Any, resource: str) -> None:
    relation, child, marker, _ = NESTED[resource]
    parent, children = nested_parent(api, resource)
    key = key_to(child, resource)

    created = svc(resource).create(parent)

    made = list(getattr(created, relation))
    assert len(made) == 2
    assert [getattr(c, key) for c in made] == [created.id, created.id]
    assert [getattr(c, marker) for c in made] == [getattr(c, marker) for c in children]
    assert all(uuid.UUID(c.id).version == 7 for c in made)
    if child in NUMBERED:
        assert [c.version for c in made] == [1, 2]
        assert [c.size for c in made] == [0, 7]
    assert svc(child).batch_get([c.id for c in made]) == made
    assert svc(child).list(f'{key} = "{created.id}"') == made
    assert svc(resource).get(created.id).id == created.id


@pytest.mark.parametrize("resource", sorted(NESTED))
def test_create_with_an_invalid_inline_child_creates_nothing(
    api: Any, svc: Any, resource: str
) -> None:
    relation, child, marker, (field, bad) = NESTED[resource]
    parent, children = nested_parent(api, resource)
    setattr(getattr(parent, relation)[1], field, bad)

    assert_invalid(rpc_error(lambda: svc(resource).create(parent)), f"{relation}[1].{field}", f"{relation}[1]")

    assert svc(resource).list(f'name = "{parent.name}"') == []
    assert svc(child).list(f'{marker} = "{getattr(children[0], marker)}"') == []


def test_inline_child_with_another_parent_id_is_invalid(api: Any, svc: Any) -> None:
    parent, _ = nested_parent(api, "Dataset")
    parent.versions[0].dataset_id = api.create("Dataset").id
    assert_invalid(rpc_error(lambda: svc("Dataset").create(parent)), "versions[0].dataset_id")
    assert svc("Dataset").list(f'name = "{parent.name}"') == []


# --------------------------------------------------------------------------------------------
# 11. Version numbers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", NUMBERED)
def test_omitted_versions_count_up_per_parent(api: Any, svc: Any, resource: str) -> None:
    key = key_to(resource, "Dataset" if resource == "DatasetVersion" else "Model")
    first = api.create(resource)
    parent = {key: getattr(first, key)}
    numbers = [first.version] + [api.create(resource, **parent).version for _ in range(2)]
    assert numbers == [1, 2, 3]

    assert api.create(resource).version == 1  # another parent counts on its own

    assert api.create(resource, **parent, version=10).version == 10
    assert api.create(resource, **parent).version == 11
    assert api.create(resource, **parent, version=5).version == 5
    assert api.create(resource, **parent).version == 12
    versions = sorted(v.version for v in svc(resource).list(f'{key} = "{parent[key]}"'))
    assert versions == [1, 2, 3, 5, 10, 11, 12]


# --------------------------------------------------------------------------------------------
# 12. Validation
# --------------------------------------------------------------------------------------------

# resource, invalid field values, the field the BadRequest must name.
INVALID_VALUES = [
    ("Workflow", {"name": "x" * 201}, "name"),
    ("Workflow", {"name": ""}, "name"),
    ("Workflow", {"status": 99}, "status"),
    ("Workflow", {"embedding": [0.1, 0.2, 0.3]}, "embedding"),
    ("Workflow", {"embedding": [NAN] * 384}, "embedding"),
    ("Dataset", {"size": -1}, "size"),
    ("Dataset", {"type": 99}, "type"),
    ("Dataset", {"type": 0}, "type"),
    ("Dataset", {"storage_path": ""}, "storage_path"),
    ("Dataset", {"embedding": [0.5] * 385}, "embedding"),
    ("Model", {"framework": 0}, "framework"),
    ("DatasetVersion", {"version": 0}, "version"),
    ("ModelVersion", {"training_duration": -1}, "training_duration"),
    ("Experiment", {"name": "x" * 201}, "name"),
    ("TrainingJob", {"accelerator_count": -1}, "accelerator_count"),
    ("Endpoint", {"name": ""}, "name"),
    ("Deployment", {"traffic_split": 101}, "traffic_split"),
    ("Deployment", {"min_replicas": 0}, "min_replicas"),
    ("Deployment", {"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
    ("Prediction", {"confidence": 1.5}, "confidence"),
    ("Prediction", {"confidence": NAN}, "confidence"),
    ("Prediction", {"latency": -1}, "latency"),
    ("Prediction", {"embedding": [1.0] * 3}, "embedding"),
    ("PatternRecognitionJob", {"patterns_found": -1}, "patterns_found"),
    ("CloudRunService", {"max_instances": -1}, "max_instances"),
    ("CloudRunService", {"region": ""}, "region"),
    ("ServiceDeployment", {"traffic_percent": 101}, "traffic_percent"),
]


def _shown(value: Any) -> Any:
    return f"len{len(value)}" if isinstance(value, (str, list)) and len(value) > 4 else value


def _case_id(case: tuple[str, dict[str, Any], str]) -> str:
    resource, values, _ = case
    return resource + "-" + ",".join(f"{key}={_shown(value)}" for key, value in values.items())


@pytest.mark.parametrize(
    ("resource", "values", "field"), INVALID_VALUES, ids=map(_case_id, INVALID_VALUES)
)
def test_create_with_an_invalid_value_is_invalid(
    api: Any, svc: Any, resource: str, values: dict[str, Any], field: str
) -> None:
    sample = api.sample(resource, **values)
    assert_invalid(rpc_error(lambda: svc(resource).create(sample)), field)


UPDATABLE_INVALID = [case for case in INVALID_VALUES if "version" not in case[1]]


@pytest.mark.parametrize(
    ("resource", "values", "field"), UPDATABLE_INVALID, ids=map(_case_id, UPDATABLE_INVALID)
)
def test_update_to_an_invalid_value_is_invalid(
    api: Any, svc: Any, resource: str, values: dict[str, Any], field: str
) -> None:
    created = api.create(resource)
    request = message(resource, id=created.id, **values)
    assert_invalid(rpc_error(lambda: svc(resource).update(request, list(values))), field)
    assert svc(resource).get(created.id) == created


# resource, field values at the edge of what is valid.
BOUNDARY_VALUES = [
    ("Workflow", {"name": "x" * 200}),
    ("Workflow", {"name": "x"}),
    ("Workflow", {"embedding": [0.25] * 384}),
    ("Dataset", {"size": 0}),
    ("Deployment", {"traffic_split": 100, "min_replicas": 3, "max_replicas": 3}),
    ("Prediction", {"confidence": 1.0}),
    ("ServiceDeployment", {"traffic_percent": 100}),
    ("DatasetVersion", {"version": 1}),
]


@pytest.mark.parametrize(
    ("resource", "values"), BOUNDARY_VALUES, ids=[_case_id((*case, "")) for case in BOUNDARY_VALUES]
)
def test_values_at_the_boundary_are_accepted(
    api: Any, svc: Any, resource: str, values: dict[str, Any]
) -> None:
    created = api.create(resource, **values)
    fetched = svc(resource).get(created.id)
    for field, value in values.items():
        assert getattr(fetched, field) == value, field


def test_an_empty_nullable_json_object_differs_from_null(api: Any, svc: Any, rows: Any) -> None:
    created = api.create("Prediction", output={})
    assert rows.Prediction.get_by_id(uuid.UUID(created.id)).output == {}
    assert created.HasField("output")
    assert svc("Prediction").get(created.id).HasField("output")
