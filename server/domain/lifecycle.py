"""The lifecycles of the resources that have one, as tables, and the rules that enforce them.

Each table lists, per state, the states a resource may move to, and the
timestamps the service sets on entering a state (unless the caller gives
them). A resource declares its lifecycle among its rules (``server.domain.catalog``),
and the generic methods apply it on every write path: Create, Update,
BatchCreate and the custom methods, which write through the same functions.

    Resource(models.TrainingJob, pb.TrainingJob, rules=(lifecycle.TRAINING_JOB,))

A create may start in any state except a ModelVersion's DEPLOYED (a record of
a job that ran elsewhere is still a record); only moves are checked. Staying
in the same state is not a move. A move the table does not list is
FAILED_PRECONDITION, naming both states:

    TrainingJob 0190… cannot move from SUCCEEDED to RUNNING (SUCCEEDED is final)

``ModelVersion.status`` DEPLOYED belongs to the service: a version becomes
DEPLOYED when one of its deployments does, and returns to the status it had
before (kept in ``models.DeployedModelVersion``) when none is DEPLOYED any more.
"""
from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.message import Message
from google.rpc import error_details_pb2
from peewee import fn

import models
from models import DeploymentStatus, ModelVersionStatus, TrainingJobStatus, utc_now
from server.core.codec import required_uuid
from server.core.errors import FailedPrecondition, NotFound
from server.core.limits import Limits
from server.core.resource import Resource
from server.core.rules import Record, Rule
from server.methods import writes
from server.methods.shaping import to_message

# TrainingJob and PatternRecognitionJob share one status enum and one lifecycle.
JOB_MOVES = {
    "PENDING": ("QUEUED", "RUNNING", "CANCELLED", "FAILED"),
    "QUEUED": ("RUNNING", "CANCELLED", "FAILED"),
    "RUNNING": ("SUCCEEDED", "FAILED", "CANCELLED"),
}
JOB_STAMPS = {"RUNNING": "start_time", "SUCCEEDED": "end_time", "FAILED": "end_time", "CANCELLED": "end_time"}

DEPLOYMENT_MOVES = {
    "PENDING": ("DEPLOYING", "FAILED"),
    "DEPLOYING": ("DEPLOYED", "FAILED"),
    "DEPLOYED": ("UNDEPLOYED",),
}
# Deployments that hold (or are about to hold) a share of their endpoint's traffic.
ACTIVE_DEPLOYMENTS = ("PENDING", "DEPLOYING", "DEPLOYED")

SERVICE_DEPLOYMENT_MOVES = {
    "PENDING": ("DEPLOYING",),
    "DEPLOYING": ("ACTIVE", "FAILED"),
    "ACTIVE": ("ROLLED_BACK",),
}


class IllegalTransition(FailedPrecondition):
    """A status change the resource's lifecycle does not allow."""

    reason = "ILLEGAL_STATE_TRANSITION"

    def __init__(self, resource: str, resource_id: Any, before: str, after: str, why: str) -> None:
        violation = error_details_pb2.PreconditionFailure.Violation(
            type="STATE_TRANSITION", subject=f"{resource}/{resource_id}", description=f"{before} -> {after}"
        )
        super().__init__(
            f"{resource} {resource_id} cannot move from {before} to {after} ({why})",
            error_details_pb2.PreconditionFailure(violations=[violation]),
        )


class Lifecycle(Rule):
    """A status field's allowed moves, and the timestamps stamped on entering a state.

    ``moves`` maps a state to the states it may move to (a state missing from it
    is final); ``None`` allows every move, for resources that only stamp.
    """

    pure = True  # It reads only the record, so batches of it insert in one statement.

    def __init__(
        self,
        resource: str,
        moves: Mapping[str, Iterable[str]] | None,
        stamps: Mapping[str, str] | None = None,
        field: str = "status",
    ) -> None:
        self.resource = resource
        self.moves = None if moves is None else {state: tuple(to) for state, to in moves.items()}
        self.stamps = dict(stamps or {})
        self.field = field

    def on_create(self, record: Record) -> None:
        self._stamp(record.get(self.field), record, record)

    def on_update(self, before: Record, changes: Record) -> None:
        old, new = before[self.field], changes.get(self.field, before[self.field])
        if new == old:
            return
        if self.moves is not None and new not in self.moves.get(old, ()):
            allowed = self.moves.get(old)
            why = f"from {old} it may move to {', '.join(allowed)}" if allowed else f"{old} is final"
            raise IllegalTransition(self.resource, before["id"], old, new, why)
        self._stamp(new, before, changes)

    def _stamp(self, state: str | None, current: Record, changes: Record) -> None:
        field = self.stamps.get(state or "")
        # "Unless the caller gives it": a value in this write, or one already stored.
        if field and changes.get(field, current.get(field)) is None:
            changes[field] = utc_now()


TRAINING_JOB = Lifecycle("TrainingJob", JOB_MOVES, JOB_STAMPS)
PATTERN_RECOGNITION_JOB = Lifecycle("PatternRecognitionJob", JOB_MOVES, JOB_STAMPS)
DEPLOYMENT = Lifecycle("Deployment", DEPLOYMENT_MOVES, {"DEPLOYED": "deployed_at"})
SERVICE_DEPLOYMENT = Lifecycle("ServiceDeployment", SERVICE_DEPLOYMENT_MOVES, {"ACTIVE": "deployed_at"})
PREDICTION = Lifecycle("Prediction", None, {"COMPLETED": "completed_at", "FAILED": "completed_at"})


# ---------------------------------------------------------------------------------------------
# ModelVersion DEPLOYED, kept by the service


class DeployedIsKeptByTheService(Rule):
    """On ModelVersion: callers neither set DEPLOYED nor leave it while a deployment serves."""

    pure = True  # Its check of a create reads the record alone.

    def on_create(self, record: Record) -> None:
        if record["status"] == ModelVersionStatus.DEPLOYED:
            raise FailedPrecondition(
                "ModelVersion status DEPLOYED is kept by the service: a version becomes DEPLOYED when one "
                "of its deployments does; create it as REGISTERED, TRAINED or VALIDATED instead"
            )

    def on_update(self, before: Record, changes: Record) -> None:
        old, new = before["status"], changes.get("status", before["status"])
        if new == old:
            return
        if new == ModelVersionStatus.DEPLOYED:
            raise IllegalTransition(
                "ModelVersion", before["id"], old, new,
                "DEPLOYED is kept by the service: the version becomes DEPLOYED when one of its deployments does",
            )
        if old == ModelVersionStatus.DEPLOYED:
            if _serving(before["id"]):
                raise IllegalTransition(
                    "ModelVersion", before["id"], old, new,
                    "a deployment of the version is DEPLOYED; undeploy it first",
                )
            # Left DEPLOYED with nothing serving (marked by hand before the service kept the
            # status): the caller may move it, and nothing is remembered for it any more.
            marked = models.DeployedModelVersion
            marked.delete().where(marked.model_version == before["id"]).execute()


class DeploymentsMarkTheirVersion(Rule):
    """On Deployment: entering or leaving DEPLOYED updates the model version's status."""

    def after_write(self, before: Record | None, after: Record | None) -> None:
        was = before is not None and before["status"] == DeploymentStatus.DEPLOYED
        now = after is not None and after["status"] == DeploymentStatus.DEPLOYED
        if was != now:
            sync_deployed_versions([(after or before or {})["model_version_id"]])


class DeletesReleaseVersions(Rule):
    """On resources whose deletion cascades to deployments (Workflow, Model, Endpoint).

    Cascaded deletes run no rules of the rows they remove, so after the delete
    the versions still marked DEPLOYED that nothing serves any more are found
    with one query, and returned to their status before.
    """

    pure = True  # Nothing happens on create.

    def after_write(self, before: Record | None, after: Record | None) -> None:
        if after is None:
            marked, deployment = models.DeployedModelVersion, models.Deployment
            serving = deployment.select().where(
                deployment.model_version == marked.model_version, deployment.status == DeploymentStatus.DEPLOYED
            )
            orphans = marked.select(marked.model_version).where(~fn.EXISTS(serving))
            sync_deployed_versions(row.model_version_id for row in orphans)


def _serving(version_id: Any) -> bool:
    deployment = models.Deployment
    return (
        deployment.select()
        .where(deployment.model_version == version_id, deployment.status == DeploymentStatus.DEPLOYED)
        .exists()
    )


def sync_deployed_versions(version_ids: Iterable[Any]) -> None:
    """Make each version DEPLOYED exactly while one of its deployments is, remembering its status before."""
    version, marked = models.ModelVersion, models.DeployedModelVersion
    for version_id in sorted(set(version_ids)):
        row = (
            version.select(version.id, version.status, version.updated_at)
            .where(version.id == version_id)
            .for_update("FOR NO KEY UPDATE")  # Does not wait for inserts that only reference it.
            .first()
        )
        if row is None:
            continue
        serving = _serving(version_id)
        if serving and row.status != ModelVersionStatus.DEPLOYED:
            marked.insert(model_version=version_id, status_before=row.status).on_conflict(
                conflict_target=[marked.model_version], update={marked.status_before: row.status}
            ).execute()
            _set_status(row, ModelVersionStatus.DEPLOYED)
        elif not serving and row.status == ModelVersionStatus.DEPLOYED:
            memory = marked.get_or_none(marked.model_version == version_id)
            previous = memory.status_before if memory else ModelVersionStatus.REGISTERED
            marked.delete().where(marked.model_version == version_id).execute()
            _set_status(row, previous)


def _set_status(row: Any, status: str) -> None:
    # Bypasses the rules on purpose (this is the service's own write), but moves
    # updated_at forward like every update so that the etag changes.
    version = models.ModelVersion
    stamp = max(utc_now(), row.updated_at + datetime.timedelta(microseconds=1))
    version.update(status=status, updated_at=stamp).where(version.id == row.id).execute()


# ---------------------------------------------------------------------------------------------
# CancelTrainingJob


def cancel_training_job(jobs: Resource, request: Message, limits: Limits) -> Message:
    """CancelTrainingJob (AIP-136): an update of the status to CANCELLED, through every rule."""
    job_id = required_uuid(request.id, "id")
    row = jobs.model.get_or_none(jobs.model.id == job_id)
    if row is None:
        raise NotFound(jobs.name, str(job_id))
    if row.status == TrainingJobStatus.CANCELLED:
        return to_message(jobs, jobs.record(row.__data__))  # Already done: a retry changes nothing.
    return writes.update(jobs, job_id, {"status": TrainingJobStatus.CANCELLED})
