"""Traffic shares: the endpoint invariant, deploying and undeploying, Cloud Run rollbacks.

The active deployments of an endpoint (PENDING, DEPLOYING, DEPLOYED) share its
traffic: their ``traffic_split`` values never sum over 100, on any write path
(``KeepsTrafficWithin100``, a rule of Deployment). DeployModelVersion and
UndeployModelVersion keep the sum at exactly 100 by scaling the other active
deployments in proportion, rounded by largest remainder:

    scale([50, 30, 20], 70)   # [35, 21, 14]
    scale([1, 1, 1], 100)     # [34, 33, 33]

Every call locks the endpoint's row first, so concurrent deploys to one
endpoint take turns, and writes every share through the generic update, so
the lifecycle rules (``server.domain.lifecycle``) apply to them as to any update.
RollbackCloudRunService does the same for the revisions of a Cloud Run service.
"""
from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.message import Message
from peewee import fn
from uuid6 import uuid7

import models
from models import DeploymentStatus, ServiceDeploymentStatus, database
from server.core.codec import parse_uuid, required_uuid
from server.core.errors import FailedPrecondition, InvalidArgument, NotFound, translate
from server.core.limits import Limits
from server.core.resource import Resource
from server.core.rules import Record, Rule
from server.domain.lifecycle import ACTIVE_DEPLOYMENTS
from server.methods import idempotency, writes
from server.methods.shaping import to_message
from versatil.ml.v1 import cloud_run_service_service_pb2, endpoint_service_pb2
from versatil.ml.v1 import resources_pb2 as pb

FULL = 100


def scale(shares: list[int], total: int) -> list[int]:
    """Whole shares in proportion to ``shares`` that sum to exactly ``total`` (largest remainder).

    Equal weights when every share is 0. Ties in the remainder go to the larger
    share, then to the earlier one, so the result is deterministic.
    """
    if not shares:
        return []
    weights = shares if any(shares) else [1] * len(shares)
    weight = sum(weights)
    floors = [w * total // weight for w in weights]
    remainders = [w * total % weight for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], -weights[i], i))
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


class KeepsTrafficWithin100(Rule):
    """On Deployment: the active deployments of an endpoint take at most 100% of its traffic.

    FAILED and UNDEPLOYED deployments carry no traffic: entering either state sets
    ``traffic_split`` to 0, and giving one of them a share is FAILED_PRECONDITION.
    """

    def on_create(self, record: Record) -> None:
        if record["status"] not in ACTIVE_DEPLOYMENTS:
            record["traffic_split"] = 0
        self._check(record)

    def on_update(self, before: Record, changes: Record) -> None:
        if "status" not in changes and "traffic_split" not in changes:
            return
        after = {**before, **changes}
        if after["status"] not in ACTIVE_DEPLOYMENTS:
            if after["status"] != before["status"]:
                changes["traffic_split"] = 0
            elif after["traffic_split"]:
                raise FailedPrecondition(
                    f"Deployment {before['id']} is {after['status']} and carries no traffic; "
                    f"its traffic_split must stay 0"
                )
            return
        self._check(after)

    @staticmethod
    def _check(record: Record) -> None:
        share = record["traffic_split"]
        if record["status"] not in ACTIVE_DEPLOYMENTS or not share or not 0 < share <= FULL:
            return  # Nothing to add up; a share out of range is the CHECK constraint's to report.
        if _lock(models.Endpoint, record["endpoint_id"]) is None:
            return  # The foreign key reports the unknown endpoint.
        others = _active(record["endpoint_id"]).where(models.Deployment.id != record["id"])
        taken = others.select(fn.COALESCE(fn.SUM(models.Deployment.traffic_split), 0)).order_by().scalar()
        if taken + share > FULL:
            raise FailedPrecondition(
                f"the active deployments of endpoint {record['endpoint_id']} would take {taken + share}% "
                f"of its traffic ({taken}% by the others, {share}% by deployment {record['id']}); "
                f"at most {FULL}% is allowed"
            )


def _lock(model: Any, row_id: Any) -> Any:
    """The row, locked until the transaction ends; inserts that only reference it do not wait."""
    return model.select().where(model.id == row_id).for_update("FOR NO KEY UPDATE").first()


def _active(endpoint_id: Any) -> Any:
    deployment = models.Deployment
    return (
        deployment.select()
        .where(deployment.endpoint == endpoint_id, deployment.status.in_(ACTIVE_DEPLOYMENTS))
        .order_by(deployment.created_at, deployment.id)
    )


def _message(resource: Resource, row: Any) -> Message:
    return to_message(resource, resource.record(row.__data__))


def _set_shares(deployments: Resource, rows: list[Any], shares: list[int]) -> None:
    # Lowered shares first, so that the sum never passes 100 on the way.
    for row, share in sorted(zip(rows, shares), key=lambda pair: pair[1] - pair[0].traffic_split):
        if share != row.traffic_split:
            writes.update(deployments, row.id, {"traffic_split": share})


def _active_messages(deployments: Resource, endpoint_id: Any) -> list[Message]:
    return [_message(deployments, row) for row in _active(endpoint_id)]


# ---------------------------------------------------------------------------------------------
# EndpointService.DeployModelVersion / UndeployModelVersion

DEPLOY = "DeployModelVersion"


def deploy_model_version(endpoints: Resource, request: Message, limits: Limits) -> Message:
    deployments, versions = endpoints.catalog["Deployment"], endpoints.catalog["ModelVersion"]
    endpoint_id = required_uuid(request.endpoint_id, "endpoint_id")
    source = request.WhichOneof("model_version_source")
    if source is None:
        raise InvalidArgument("model_version_id or model_version is required", "model_version_id")
    version_id = required_uuid(request.model_version_id, "model_version_id") if source == "model_version_id" else None
    if not request.machine_type:
        raise InvalidArgument("machine_type is required", "machine_type")
    share = request.traffic_split if request.HasField("traffic_split") else None
    if share is not None and not 0 <= share <= FULL:
        raise InvalidArgument(f"traffic_split must be between 0 and {FULL}, got {share}", "traffic_split")
    request_id = parse_uuid(request.request_id, "request_id") if request.request_id else None

    with database.atomic():
        endpoint = _lock(models.Endpoint, endpoint_id)
        if endpoint is None:
            raise NotFound("Endpoint", str(endpoint_id))
        deployment_id = uuid7()
        if request_id is not None:
            first = idempotency.claim(DEPLOY, request_id, idempotency.fingerprint(DEPLOY, request), deployment_id)
            if first is not None:
                return _deployed(endpoints, first, endpoint_id)

        if version_id is not None:
            version = models.ModelVersion.get_or_none(models.ModelVersion.id == version_id)
            if version is None:
                raise NotFound("ModelVersion", str(version_id))
            _same_model(version.model_id, endpoint)
        else:
            given = request.model_version
            if given.model_id:
                _same_model(parse_uuid(given.model_id, "model_version.model_id"), endpoint)
            new_version = pb.ModelVersion()
            new_version.CopyFrom(given)
            new_version.model_id = str(endpoint.model_id)
            try:
                version_id = uuid.UUID(writes.insert(versions, new_version).id)
            except Exception as error:
                raise translate(error).at("model_version") from None

        others = list(_active(endpoint_id))
        carried = sum(d.traffic_split for d in others)
        if share is None:
            share = 0 if carried else FULL
        if not others and share != FULL:
            raise FailedPrecondition(
                f"endpoint {endpoint_id} has no other active deployment to take the remaining "
                f"{FULL - share}% of its traffic: its first deployment takes {FULL}% (leave traffic_split unset)"
            )
        _set_shares(deployments, others, scale([d.traffic_split for d in others], FULL - share))
        min_replicas = request.min_replicas if request.HasField("min_replicas") else 1
        deployment = pb.Deployment(
            endpoint_id=str(endpoint_id),
            model_version_id=str(version_id),
            traffic_split=share,
            machine_type=request.machine_type,
            min_replicas=min_replicas,
            max_replicas=request.max_replicas if request.HasField("max_replicas") else max(min_replicas, 1),
            status=pb.DEPLOYMENT_STATUS_DEPLOYING,
        )
        writes.insert(deployments, deployment, deployment_id)
        return _deployed(endpoints, deployment_id, endpoint_id)


def _same_model(model_id: Any, endpoint: Any) -> None:
    if model_id != endpoint.model_id:
        raise FailedPrecondition(
            f"the model version belongs to model {model_id}, but endpoint {endpoint.id} serves model "
            f"{endpoint.model_id}"
        )


def _deployed(endpoints: Resource, deployment_id: uuid.UUID, endpoint_id: uuid.UUID) -> Message:
    deployments, versions = endpoints.catalog["Deployment"], endpoints.catalog["ModelVersion"]
    deployment = models.Deployment.get_or_none(models.Deployment.id == deployment_id)
    if deployment is None:
        raise NotFound("Deployment", str(deployment_id))
    version = models.ModelVersion.get_by_id(deployment.model_version_id)
    return endpoint_service_pb2.DeployModelVersionResponse(
        deployment=_message(deployments, deployment),
        model_version=_message(versions, version),
        deployments=_active_messages(deployments, endpoint_id),
    )


def undeploy_model_version(endpoints: Resource, request: Message, limits: Limits) -> Message:
    deployments = endpoints.catalog["Deployment"]
    endpoint_id = required_uuid(request.endpoint_id, "endpoint_id")
    deployment_id = required_uuid(request.deployment_id, "deployment_id")
    with database.atomic():
        if _lock(models.Endpoint, endpoint_id) is None:
            raise NotFound("Endpoint", str(endpoint_id))
        deployment = models.Deployment.get_or_none(models.Deployment.id == deployment_id)
        if deployment is None:
            raise NotFound("Deployment", str(deployment_id))
        if deployment.endpoint_id != endpoint_id:
            raise FailedPrecondition(
                f"deployment {deployment_id} belongs to endpoint {deployment.endpoint_id}, not to {endpoint_id}"
            )
        if deployment.status != DeploymentStatus.UNDEPLOYED:  # Already undeployed: a retry changes nothing.
            writes.update(deployments, deployment_id, {"status": DeploymentStatus.UNDEPLOYED, "traffic_split": 0})
            others = list(_active(endpoint_id))
            _set_shares(deployments, others, scale([d.traffic_split for d in others], FULL))
        return endpoint_service_pb2.UndeployModelVersionResponse(
            deployments=_active_messages(deployments, endpoint_id),
            deployment=_message(deployments, models.Deployment.get_by_id(deployment_id)),
        )


# ---------------------------------------------------------------------------------------------
# CloudRunServiceService.RollbackCloudRunService


def rollback_cloud_run_service(services: Resource, request: Message, limits: Limits) -> Message:
    revisions = services.catalog["ServiceDeployment"]
    service_id = required_uuid(request.id, "id")
    with database.atomic():
        if _lock(models.CloudRunService, service_id) is None:
            raise NotFound("CloudRunService", str(service_id))
        revision = models.ServiceDeployment
        active = list(
            revision.select()
            .where(revision.cloud_run_service == service_id, revision.status == ServiceDeploymentStatus.ACTIVE)
            .order_by(revision.created_at.desc(), revision.id.desc())
        )
        if not active:
            raise FailedPrecondition(f"Cloud Run service {service_id} has no ACTIVE revision to roll back")
        current, *earlier = active
        if not earlier:
            raise FailedPrecondition(
                f"Cloud Run service {service_id} has no ACTIVE revision older than {current.revision!r} "
                f"to roll back to"
            )
        previous, *older = earlier
        rolled_back = writes.update(
            revisions, current.id, {"status": ServiceDeploymentStatus.ROLLED_BACK, "traffic_percent": 0}
        )
        for stale in older:
            if stale.traffic_percent:
                writes.update(revisions, stale.id, {"traffic_percent": 0})
        restored = writes.update(revisions, previous.id, {"traffic_percent": FULL})
        return cloud_run_service_service_pb2.RollbackCloudRunServiceResponse(active=restored, rolled_back=rolled_back)
