"""Idempotent creates (AIP-155) and version numbering under concurrency.

Concurrent tests call through the shared channel from a ThreadPoolExecutor and
check the database only after every call has returned: the session's
connection pool is as large as the server's thread pool, so holding a
connection in the test while 8 calls run would starve the server.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

import models
from tests.support import RESOURCES, assert_invalid, list_all, message, rpc_error, unique

THREADS = 8

# --------------------------------------------------------------------------- helpers


def create(api: Any, resource: str, resource_message: Any, request_id: str = "") -> Any:
    singular = RESOURCES[resource].singular
    return api.call(resource, f"Create{resource}", **{singular: resource_message}, request_id=request_id)


def batch(api: Any, resource: str, items: list[tuple[Any, str]]) -> list[Any]:
    """BatchCreate ``(message, request_id)`` items; the created resources in order."""
    singular = RESOURCES[resource].singular
    requests = [message(f"Create{resource}Request", **{singular: m}, request_id=r) for m, r in items]
    response = api.call(resource, f"BatchCreate{resource}s", requests=requests)
    return list(getattr(response, RESOURCES[resource].plural))


def count(resource: str, **where: Any) -> int:
    """Rows of ``resource`` whose columns equal ``where`` (a short connection of its own)."""
    model = RESOURCES[resource].model
    with models.database.connection_context():
        query = model.select()
        for name, value in where.items():
            query = query.where(RESOURCES[resource].fields[name] == value)
        return query.count()


def request_id() -> str:
    return str(uuid.uuid4())


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` at once (released together by a barrier); results or exceptions, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


# A resource to create idempotently and the column that tells its rows apart.
SCOPES = {
    "Workflow": "name",
    "Dataset": "name",
    "DatasetVersion": "dataset_id",
    "ModelVersion": "model_id",
    "Prediction": "endpoint_id",
    "CloudRunService": "name",
}


def scope_of(resource: str, created: Any) -> dict[str, Any]:
    field = SCOPES[resource]
    return {field: getattr(created, field)}


# --------------------------------------------------------------------------- repeated request_id


@pytest.mark.parametrize("resource", sorted(SCOPES))
def test_same_request_id_twice_returns_the_first_result(api, resource):
    sample = api.sample(resource)
    key = request_id()

    first = create(api, resource, sample, key)
    second = create(api, resource, sample, key)

    assert second == first  # same id, same timestamps, same etag
    assert count(resource, **scope_of(resource, first)) == 1
    assert api.call(resource, f"Get{resource}", id=first.id) == first


def test_repeated_request_does_not_take_a_new_version_number(api):
    dataset = api.create("Dataset")
    sample = api.sample("DatasetVersion", dataset_id=dataset.id)
    key = request_id()

    first = create(api, "DatasetVersion", sample, key)
    again = create(api, "DatasetVersion", sample, key)
    later = create(api, "DatasetVersion", sample)

    assert first.version == again.version == 1
    assert later.version == 2
    assert count("DatasetVersion", dataset_id=dataset.id) == 2


def test_without_request_id_every_call_creates(api):
    dataset = api.create("Dataset")
    sample = api.sample("DatasetVersion", dataset_id=dataset.id)

    made = [create(api, "DatasetVersion", sample) for _ in range(3)]

    assert len({m.id for m in made}) == 3
    assert count("DatasetVersion", dataset_id=dataset.id) == 3


def test_repeat_after_an_update_returns_the_resource_as_it_is_now(api):
    sample = api.sample("Workflow")
    key = request_id()
    first = create(api, "Workflow", sample, key)
    updated = api.call(
        "Workflow",
        "UpdateWorkflow",
        workflow=message("Workflow", id=first.id, description="changed"),
        update_mask={"paths": ["description"]},
    )

    again = create(api, "Workflow", sample, key)

    assert again.id == first.id
    assert again.description in ("changed", first.description)  # AIP-155 allows either
    assert count("Workflow", name=first.name) == 1
    assert updated.id == first.id


@pytest.mark.parametrize(
    "change",
    [
        {"description": "another description"},
        {"name": unique("another")},
        {"status": 2},
        {"config": {"nodes": []}},
    ],
)
def test_same_request_id_with_another_payload_is_invalid(api, change):
    sample = api.sample("Workflow")
    key = request_id()
    first = create(api, "Workflow", sample, key)
    other = message("Workflow")
    other.CopyFrom(sample)
    for field, value in change.items():
        if field == "config":
            other.config.Clear()
            other.config.update(value)
        else:
            setattr(other, field, value)

    error = rpc_error(create, api, "Workflow", other, key)

    assert_invalid(error, "request_id")
    assert count("Workflow", name=sample.name) == 1
    assert count("Workflow", name=other.name) == (1 if other.name == sample.name else 0)
    assert api.call("Workflow", "GetWorkflow", id=first.id) == first


def test_same_request_id_on_another_resource_is_invalid(api):
    key = request_id()
    create(api, "Workflow", api.sample("Workflow"), key)
    experiment = api.sample("Experiment")

    error = rpc_error(create, api, "Experiment", experiment, key)

    assert_invalid(error, "request_id")
    assert count("Experiment", name=experiment.name) == 0


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-uuid",
        "1234",
        "0" * 31,
        "123e4567-e89b-12d3-a456-42661417400g",
        "123e4567-e89b-12d3-a456-4266141740001",
        " ",
        "✓" * 36,
    ],
)
def test_malformed_request_id_is_invalid(api, bad):
    sample = api.sample("Workflow")

    error = rpc_error(create, api, "Workflow", sample, bad)

    assert_invalid(error, "request_id")
    assert count("Workflow", name=sample.name) == 0


def test_failed_create_does_not_use_up_its_request_id(api):
    key = request_id()
    orphan = api.sample("Dataset", workflow_id=str(uuid.uuid4()))
    error = rpc_error(create, api, "Dataset", orphan, key)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())

    fixed = api.sample("Dataset")
    created = create(api, "Dataset", fixed, key)

    assert created.name == fixed.name
    assert create(api, "Dataset", fixed, key) == created


# --------------------------------------------------------------------------- BatchCreate


def test_batch_repeated_returns_the_same_resources(api):
    dataset = api.create("Dataset")
    items = [(api.sample("DatasetVersion", dataset_id=dataset.id, checksum=f"c{i}"), request_id()) for i in range(4)]

    first = batch(api, "DatasetVersion", items)
    second = batch(api, "DatasetVersion", items)

    assert second == first
    assert [v.version for v in first] == [1, 2, 3, 4]
    assert count("DatasetVersion", dataset_id=dataset.id) == 4


def test_batch_mixing_seen_and_new_request_ids(api):
    endpoint = api.create("Endpoint")
    model_version = api.create("ModelVersion")
    sample = lambda latency: api.sample(  # noqa: E731
        "Prediction", endpoint_id=endpoint.id, model_version_id=model_version.id, latency=latency
    )
    seen_key = request_id()
    single = create(api, "Prediction", sample(1), seen_key)

    made = batch(api, "Prediction", [(sample(0), request_id()), (sample(1), seen_key), (sample(2), "")])

    assert made[1] == single
    assert [p.latency for p in made] == [0, 1, 2]
    assert len({p.id for p in made}) == 3
    assert count("Prediction", endpoint_id=endpoint.id) == 3


def test_batch_repeating_one_request_id_inside_itself(api):
    sample = api.sample("Workflow")
    key = request_id()

    made = batch(api, "Workflow", [(sample, key), (sample, key)])

    assert made[0] == made[1]
    assert count("Workflow", name=sample.name) == 1


def test_batch_with_one_request_id_for_two_payloads_is_invalid_and_creates_nothing(api):
    first, second = api.sample("Workflow"), api.sample("Workflow")
    key = request_id()

    error = rpc_error(batch, api, "Workflow", [(first, request_id()), (first, key), (second, key)])

    assert_invalid(error, "requests[2].request_id")
    assert count("Workflow", name=first.name) == 0
    assert count("Workflow", name=second.name) == 0


def test_malformed_request_id_in_a_batch_is_invalid(api):
    first, second = api.sample("Workflow"), api.sample("Workflow")

    error = rpc_error(batch, api, "Workflow", [(first, request_id()), (second, "nope")])

    assert_invalid(error, "requests[1].request_id", "requests[1]")
    assert count("Workflow", name=first.name) == 0


def test_failed_batch_keeps_none_of_its_request_ids(api):
    workflow = api.create("Workflow")
    good = api.sample("Experiment", workflow_id=workflow.id)
    orphan = api.sample("Experiment", workflow_id=str(uuid.uuid4()))
    good_key, orphan_key = request_id(), request_id()

    error = rpc_error(batch, api, "Experiment", [(good, good_key), (orphan, orphan_key)])
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
    assert count("Experiment", workflow_id=workflow.id) == 0

    # Both keys are free again: even with other payloads they create.
    other = api.sample("Experiment", workflow_id=workflow.id)
    fixed = api.sample("Experiment", workflow_id=workflow.id)
    made = batch(api, "Experiment", [(other, good_key), (fixed, orphan_key)])
    assert [e.name for e in made] == [other.name, fixed.name]
    assert count("Experiment", workflow_id=workflow.id) == 2


def test_batch_create_with_request_ids_is_idempotent(api):
    endpoint = api.create("Endpoint")
    version = api.create("ModelVersion", model_id=endpoint.model_id)
    requests = [
        message("CreatePredictionRequest", request_id=str(uuid.uuid4()), prediction=message(
            "Prediction", endpoint_id=endpoint.id, model_version_id=version.id, input={"i": i}, latency=i))
        for i in range(3)
    ]
    first = api.call("Prediction", "BatchCreatePredictions", requests=requests).predictions
    again = api.call("Prediction", "BatchCreatePredictions", requests=requests).predictions
    assert [p.id for p in again] == [p.id for p in first]
    assert list(again) == list(first)
    scope = f'endpoint_id = "{endpoint.id}"'
    assert sorted(p.id for p in list_all(api, "Prediction", scope)) == sorted(p.id for p in first)

    # One more new item next to the repeated ones: only it is created.
    extra = message("CreatePredictionRequest", request_id=str(uuid.uuid4()), prediction=message(
        "Prediction", endpoint_id=endpoint.id, model_version_id=version.id, input={"i": 9}, latency=9))
    mixed = api.call("Prediction", "BatchCreatePredictions", requests=[*requests, extra]).predictions
    assert [p.id for p in mixed[:3]] == [p.id for p in first]
    assert len(list_all(api, "Prediction", scope)) == 4


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("resource", ["Workflow", "DatasetVersion", "Prediction"])
def test_concurrent_creates_with_one_request_id_make_one_row(api, resource):
    sample = api.sample(resource)
    key = request_id()

    results = concurrently([lambda: create(api, resource, sample, key) for _ in range(THREADS)])

    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert not errors, [(e.code(), e.details()) for e in errors]
    assert len({r.id for r in results}) == 1
    assert all(r == results[0] for r in results)
    assert count(resource, **scope_of(resource, results[0])) == 1


def test_concurrent_creates_with_distinct_request_ids_make_distinct_rows(api):
    dataset = api.create("Dataset")
    sample = api.sample("DatasetVersion", dataset_id=dataset.id)
    keys = [request_id() for _ in range(THREADS)]

    results = concurrently([lambda k=k: create(api, "DatasetVersion", sample, k) for k in keys])

    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert not errors, [(e.code(), e.details()) for e in errors]
    assert sorted(r.version for r in results) == list(range(1, THREADS + 1))
    assert count("DatasetVersion", dataset_id=dataset.id) == THREADS


@pytest.mark.parametrize("resource, parent_field", [("DatasetVersion", "dataset_id"), ("ModelVersion", "model_id")])
def test_concurrent_version_numbering(api, resource, parent_field):
    per_thread = 5
    parent = api.create("Dataset" if resource == "DatasetVersion" else "Model")
    sample = api.sample(resource, **{parent_field: parent.id})

    def worker() -> list[int]:
        return [create(api, resource, sample).version for _ in range(per_thread)]

    results = concurrently([worker for _ in range(THREADS)])

    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert not errors, [(e.code(), e.details()) for e in errors]
    versions = sorted(v for numbers in results for v in numbers)
    assert versions == list(range(1, THREADS * per_thread + 1))
    for numbers in results:
        assert numbers == sorted(numbers), "one caller's versions went backwards"
    model = RESOURCES[resource].model
    with models.database.connection_context():
        stored = sorted(
            row.version
            for row in model.select(model.version).where(RESOURCES[resource].fields[parent_field] == parent.id)
        )
    assert stored == versions


def test_concurrent_versions_under_different_parents_are_independent(api):
    datasets = [api.create("Dataset") for _ in range(2)]
    samples = [api.sample("DatasetVersion", dataset_id=d.id) for d in datasets]

    results = concurrently([lambda s=samples[i % 2]: create(api, "DatasetVersion", s) for i in range(THREADS)])

    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert not errors, [(e.code(), e.details()) for e in errors]
    for dataset in datasets:
        numbers = sorted(r.version for r in results if r.dataset_id == dataset.id)
        assert numbers == list(range(1, THREADS // 2 + 1))
