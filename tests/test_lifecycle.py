"""Lifecycles (server/lifecycle.py) through a real channel: every move of every table, legal or not.

The tables are restated here rather than imported, so that a changed table is noticed. Rows
start in a state by being created in it (a create may start anywhere); each move is then one
UpdateX naming status. Every illegal move is FAILED_PRECONDITION naming both states.
"""
from __future__ import annotations

import itertools
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.support import assert_invalid, message, refused
from tests.support.domain import assert_illegal_move, enum, get, moment, recent, short, update

Code = grpc.StatusCode

JOB_STATES = ("PENDING", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
JOB_MOVES = {
    ("PENDING", "QUEUED"), ("PENDING", "RUNNING"), ("PENDING", "CANCELLED"), ("PENDING", "FAILED"),
    ("QUEUED", "RUNNING"), ("QUEUED", "CANCELLED"), ("QUEUED", "FAILED"),
    ("RUNNING", "SUCCEEDED"), ("RUNNING", "FAILED"), ("RUNNING", "CANCELLED"),
}
DEPLOYMENT_STATES = ("PENDING", "DEPLOYING", "DEPLOYED", "FAILED", "UNDEPLOYED")
DEPLOYMENT_MOVES = {
    ("PENDING", "DEPLOYING"), ("PENDING", "FAILED"),
    ("DEPLOYING", "DEPLOYED"), ("DEPLOYING", "FAILED"),
    ("DEPLOYED", "UNDEPLOYED"),
}
SERVICE_STATES = ("PENDING", "DEPLOYING", "ACTIVE", "FAILED", "ROLLED_BACK")
SERVICE_MOVES = {("PENDING", "DEPLOYING"), ("DEPLOYING", "ACTIVE"), ("DEPLOYING", "FAILED"), ("ACTIVE", "ROLLED_BACK")}

MACHINES = {
    "TrainingJob": (JOB_STATES, JOB_MOVES),
    "PatternRecognitionJob": (JOB_STATES, JOB_MOVES),
    "Deployment": (DEPLOYMENT_STATES, DEPLOYMENT_MOVES),
    "ServiceDeployment": (SERVICE_STATES, SERVICE_MOVES),
}


def cases(legal: bool) -> list[tuple[str, str, str]]:
    return [
        (resource, before, after)
        for resource, (states, moves) in MACHINES.items()
        for before, after in itertools.permutations(states, 2)
        if ((before, after) in moves) == legal
    ]


def made(api: Any, resource: str, state: str, **fields: Any) -> Any:
    return api.create(resource, status=enum(resource, state), **fields)


def ids(found: list[tuple[str, str, str]]) -> list[str]:
    return ["-".join(case) for case in found]


@pytest.mark.parametrize(("resource", "before", "after"), cases(legal=True), ids=ids(cases(legal=True)))
def test_every_listed_move_is_allowed(api: Any, resource: str, before: str, after: str) -> None:
    row = made(api, resource, before)
    moved = update(api, resource, row.id, status=enum(resource, after))
    assert short(resource, moved.status) == after
    assert short(resource, get(api, resource, row.id).status) == after


@pytest.mark.parametrize(("resource", "before", "after"), cases(legal=False), ids=ids(cases(legal=False)))
def test_every_other_move_is_failed_precondition_naming_both_states(
    api: Any, resource: str, before: str, after: str
) -> None:
    row = made(api, resource, before)
    error = refused(lambda: update(api, resource, row.id, status=enum(resource, after)), Code.FAILED_PRECONDITION)
    assert_illegal_move(error, before, after)
    assert row.id in error.details()
    assert get(api, resource, row.id) == row  # Nothing changed.


@pytest.mark.parametrize("resource", sorted(MACHINES))
def test_staying_in_a_state_is_not_a_move(api: Any, resource: str) -> None:
    states, _ = MACHINES[resource]
    final = states[-1]  # CANCELLED, UNDEPLOYED, ROLLED_BACK: no move leaves them.
    row = made(api, resource, final)
    assert short(resource, update(api, resource, row.id, status=enum(resource, final)).status) == final


@pytest.mark.parametrize("resource", ["TrainingJob", "PatternRecognitionJob"])
def test_job_times_are_stamped_on_entering_running_and_a_final_state(api: Any, resource: str) -> None:
    job = made(api, resource, "PENDING")
    assert not job.HasField("start_time") and not job.HasField("end_time")

    running = update(api, resource, job.id, status=enum(resource, "RUNNING"))
    assert recent(running.start_time) and not running.HasField("end_time")

    done = update(api, resource, job.id, status=enum(resource, "SUCCEEDED"))
    assert done.start_time == running.start_time
    assert recent(done.end_time) and moment(done.end_time) >= moment(done.start_time)


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "CANCELLED"])
def test_a_time_the_caller_gives_is_kept(api: Any, final: str) -> None:
    started = timestamp_pb2.Timestamp(seconds=1_767_225_600)  # 2026-01-01T00:00:00Z
    ended = timestamp_pb2.Timestamp(seconds=1_767_229_200)
    job = made(api, "TrainingJob", "QUEUED")
    running = update(api, "TrainingJob", job.id, status=enum("TrainingJob", "RUNNING"), start_time=started)
    assert running.start_time == started
    done = update(api, "TrainingJob", job.id, status=enum("TrainingJob", final), end_time=ended)
    assert (done.start_time, done.end_time) == (started, ended)


def test_creating_a_job_already_running_or_finished_stamps_it(api: Any) -> None:
    running = made(api, "TrainingJob", "RUNNING")
    assert recent(running.start_time) and not running.HasField("end_time")
    failed = made(api, "PatternRecognitionJob", "FAILED")
    assert recent(failed.end_time) and not failed.HasField("start_time")


def test_rules_apply_to_batch_creates_and_upserts(api: Any) -> None:
    experiment = api.create("Experiment")
    dataset = api.create("Dataset", workflow_id=experiment.workflow_id)
    parents = {"experiment_id": experiment.id, "dataset_id": dataset.id}
    requests = [
        message("CreateTrainingJobRequest", training_job=api.sample("TrainingJob", status=enum("TrainingJob", s), **parents))
        for s in ("RUNNING", "SUCCEEDED")
    ]
    jobs = api.call("TrainingJob", "BatchCreateTrainingJobs", requests=requests).training_jobs
    assert recent(jobs[0].start_time) and recent(jobs[1].end_time)

    upserted = api.call(
        "TrainingJob",
        "UpdateTrainingJob",
        training_job=api.sample("TrainingJob", id=str(uuid.uuid4()), status=enum("TrainingJob", "RUNNING"), **parents),
        allow_missing=True,
    )
    assert recent(upserted.start_time)


# --------------------------------------------------------------------------- CancelTrainingJob


def cancel(api: Any, job_id: str) -> Any:
    return api.call("TrainingJob", "CancelTrainingJob", id=job_id)


@pytest.mark.parametrize("state", ["PENDING", "QUEUED", "RUNNING"])
def test_cancel_from_any_unfinished_state(api: Any, state: str) -> None:
    job = made(api, "TrainingJob", state)
    cancelled = cancel(api, job.id)
    assert short("TrainingJob", cancelled.status) == "CANCELLED"
    assert recent(cancelled.end_time)
    assert cancelled.etag != job.etag
    assert get(api, "TrainingJob", job.id) == cancelled


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED"])
def test_cancel_after_the_end_is_failed_precondition(api: Any, state: str) -> None:
    job = made(api, "TrainingJob", state)
    assert_illegal_move(refused(lambda: cancel(api, job.id), Code.FAILED_PRECONDITION), state, "CANCELLED")
    assert get(api, "TrainingJob", job.id) == job


def test_cancelling_again_changes_nothing(api: Any) -> None:
    cancelled = cancel(api, made(api, "TrainingJob", "RUNNING").id)
    assert cancel(api, cancelled.id) == cancelled


def test_cancel_checks_its_id(api: Any) -> None:
    refused(lambda: cancel(api, str(uuid.uuid4())), Code.NOT_FOUND)
    assert_invalid(refused(lambda: cancel(api, "nope"), Code.INVALID_ARGUMENT), "id")
    assert_invalid(refused(lambda: cancel(api, ""), Code.INVALID_ARGUMENT), "id")


# --------------------------------------------------------------------------- stamps of the others


def test_deployed_at_and_service_deployed_at_are_stamped(api: Any) -> None:
    deployment = made(api, "Deployment", "DEPLOYING")
    assert not deployment.HasField("deployed_at")
    assert recent(update(api, "Deployment", deployment.id, status=enum("Deployment", "DEPLOYED")).deployed_at)

    revision = made(api, "ServiceDeployment", "DEPLOYING")
    assert recent(update(api, "ServiceDeployment", revision.id, status=enum("ServiceDeployment", "ACTIVE")).deployed_at)


@pytest.mark.parametrize("state", ["FAILED", "UNDEPLOYED"])
def test_inactive_deployments_carry_no_traffic(api: Any, state: str) -> None:
    source = "DEPLOYED" if state == "UNDEPLOYED" else "DEPLOYING"
    deployment = made(api, "Deployment", source, traffic_split=40)
    moved = update(api, "Deployment", deployment.id, status=enum("Deployment", state))
    assert moved.traffic_split == 0
    error = refused(lambda: update(api, "Deployment", deployment.id, traffic_split=10), Code.FAILED_PRECONDITION)
    assert state in error.details()
    assert made(api, "Deployment", state, traffic_split=30).traffic_split == 0


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED"])
def test_prediction_completed_at_is_stamped_unless_given(api: Any, state: str) -> None:
    pending = api.create("Prediction")
    assert not pending.HasField("completed_at")
    done = update(api, "Prediction", pending.id, status=enum("Prediction", state))
    assert recent(done.completed_at)

    assert recent(api.create("Prediction", status=enum("Prediction", state)).completed_at)
    given = timestamp_pb2.Timestamp(seconds=1_767_225_600)
    assert api.create("Prediction", status=enum("Prediction", state), completed_at=given).completed_at == given


# --------------------------------------------------------------------------- ModelVersion DEPLOYED


def serving_setup(api: Any, status: str = "VALIDATED") -> tuple[Any, Any, Any]:
    """A model version in ``status`` with an endpoint of its model."""
    model = api.create("Model")
    version = api.create("ModelVersion", model_id=model.id, status=enum("ModelVersion", status))
    endpoint = api.create("Endpoint", model_id=model.id)
    return model, version, endpoint


def deployment_of(api: Any, version: Any, endpoint: Any, state: str, share: int = 0) -> Any:
    return api.create(
        "Deployment", endpoint_id=endpoint.id, model_version_id=version.id, status=enum("Deployment", state),
        traffic_split=share,
    )


def version_status(api: Any, version: Any) -> str:
    return short("ModelVersion", get(api, "ModelVersion", version.id).status)


def test_a_caller_never_sets_deployed(api: Any) -> None:
    error = refused(lambda: api.create("ModelVersion", status=enum("ModelVersion", "DEPLOYED")), Code.FAILED_PRECONDITION)
    assert "DEPLOYED" in error.details()

    version = api.create("ModelVersion", status=enum("ModelVersion", "TRAINED"))
    error = refused(
        lambda: update(api, "ModelVersion", version.id, status=enum("ModelVersion", "DEPLOYED")), Code.FAILED_PRECONDITION
    )
    assert_illegal_move(error, "TRAINED", "DEPLOYED")


def test_a_batch_with_a_deployed_version_creates_nothing(api: Any) -> None:
    model = api.create("Model")
    requests = [
        message("CreateModelVersionRequest", model_version=api.sample("ModelVersion", model_id=model.id, status=enum("ModelVersion", s)))
        for s in ("TRAINED", "DEPLOYED")
    ]
    error = refused(lambda: api.call("ModelVersion", "BatchCreateModelVersions", requests=requests), Code.FAILED_PRECONDITION)
    assert "requests[1]" in error.details()
    listed = api.call("ModelVersion", "ListModelVersions", filter=f'model_id = "{model.id}"')
    assert list(listed.model_versions) == []


def test_a_version_is_deployed_while_a_deployment_is(api: Any) -> None:
    _, version, endpoint = serving_setup(api, "VALIDATED")
    first = deployment_of(api, version, endpoint, "DEPLOYING")
    assert version_status(api, version) == "VALIDATED"

    update(api, "Deployment", first.id, status=enum("Deployment", "DEPLOYED"))
    deployed = get(api, "ModelVersion", version.id)
    assert short("ModelVersion", deployed.status) == "DEPLOYED"
    assert deployed.etag != version.etag

    second = deployment_of(api, version, api.create("Endpoint", model_id=version.model_id), "DEPLOYED")
    update(api, "Deployment", first.id, status=enum("Deployment", "UNDEPLOYED"))
    assert version_status(api, version) == "DEPLOYED"  # The second one still serves it.

    update(api, "Deployment", second.id, status=enum("Deployment", "UNDEPLOYED"))
    assert version_status(api, version) == "VALIDATED"  # Back to what it was before.


def test_a_serving_version_keeps_deployed(api: Any) -> None:
    _, version, endpoint = serving_setup(api, "TRAINED")
    deployment_of(api, version, endpoint, "DEPLOYED")
    error = refused(
        lambda: update(api, "ModelVersion", version.id, status=enum("ModelVersion", "DEPRECATED")), Code.FAILED_PRECONDITION
    )
    assert_illegal_move(error, "DEPLOYED", "DEPRECATED")
    # Other fields, and DEPLOYED itself, may still be written.
    assert update(api, "ModelVersion", version.id, checksum="sha256:x", status=enum("ModelVersion", "DEPLOYED")).checksum == "sha256:x"


@pytest.mark.parametrize("deleted", ["Deployment", "Endpoint", "Model"])
def test_deleting_what_serves_it_returns_the_version_to_its_status(api: Any, deleted: str) -> None:
    model, version, endpoint = serving_setup(api, "VALIDATED")
    _, other_version, _ = serving_setup(api, "TRAINED")
    # A deployment may serve a version of another model; deleting that model's endpoint frees it too.
    cross = deployment_of(api, other_version, endpoint, "DEPLOYED")
    deployment = deployment_of(api, version, endpoint, "DEPLOYED")
    assert version_status(api, version) == version_status(api, other_version) == "DEPLOYED"

    target = {"Deployment": deployment.id, "Endpoint": endpoint.id, "Model": model.id}[deleted]
    api.call(deleted, f"Delete{deleted}", id=target)

    if deleted == "Model":  # The version went with its model.
        refused(lambda: get(api, "ModelVersion", version.id), Code.NOT_FOUND)
    else:
        assert version_status(api, version) == "VALIDATED"
    assert version_status(api, other_version) == ("DEPLOYED" if deleted == "Deployment" else "TRAINED")
    if deleted == "Deployment":  # Only the one deployment went.
        assert get(api, "Deployment", cross.id).model_version_id == other_version.id
    else:  # The cross deployment went with its endpoint.
        refused(lambda: get(api, "Deployment", cross.id), Code.NOT_FOUND)
