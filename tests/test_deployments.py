"""Traffic shares (server/deployments.py): deploying, undeploying, the invariant, rollbacks.

Through the real channel on real PostgreSQL. Each test builds its own model, endpoint and
versions. The concurrent test calls through the shared channel from a thread pool and reads
the database only after every call has returned (the test's pool is the server's size).
"""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import grpc
from hypothesis import given
from hypothesis import strategies as st

from server.domain.deployments import scale
from tests.support import assert_invalid, message, refused
from tests.support.domain import assert_illegal_move, enum, get, short, update

Code = grpc.StatusCode

# --------------------------------------------------------------------------- largest remainder


@given(st.lists(st.integers(0, 100), min_size=1, max_size=12), st.integers(0, 100))
def test_scale_sums_exactly_and_stays_within_one_of_the_exact_share(shares: list[int], total: int) -> None:
    scaled = scale(shares, total)
    assert sum(scaled) == total
    weights = shares if any(shares) else [1] * len(shares)
    for share, weight in zip(scaled, weights):
        exact = Fraction(weight * total, sum(weights))
        assert exact - 1 < share < exact + 1


def test_scale_gives_the_remainder_to_the_largest_fractions() -> None:
    assert scale([50, 30, 20], 70) == [35, 21, 14]
    assert scale([70, 30], 90) == [63, 27]
    assert scale([50, 50], 33) == [17, 16]  # A tie goes to the earlier one.
    assert scale([1, 1, 1], 100) == [34, 33, 33]
    assert scale([60, 25, 15], 50) == [30, 13, 7]  # 30, 12.5, 7.5: the larger share wins the tie.
    assert scale([0, 0], 100) == [50, 50]
    assert scale([], 100) == []


# --------------------------------------------------------------------------- helpers


def endpoint_of(api: Any) -> tuple[Any, Any]:
    model = api.create("Model")
    return model, api.create("Endpoint", model_id=model.id)


def version_of(api: Any, model: Any, status: str = "VALIDATED") -> Any:
    return api.create("ModelVersion", model_id=model.id, status=enum("ModelVersion", status))


def deploy(api: Any, endpoint: Any, version: Any = None, share: int | None = None, **fields: Any) -> Any:
    if version is not None:
        fields["model_version_id"] = version.id
    if share is not None:
        fields["traffic_split"] = share
    fields.setdefault("machine_type", "n1-standard-4")
    return api.call("Endpoint", "DeployModelVersion", endpoint_id=endpoint.id, **fields)


def shares(deployments: Any) -> dict[str, int]:
    return {d.id: d.traffic_split for d in deployments}


def active(api: Any, endpoint: Any) -> dict[str, int]:
    listed = api.call(
        "Deployment",
        "ListDeployments",
        filter=f'endpoint_id = "{endpoint.id}" AND status IN (PENDING, DEPLOYING, DEPLOYED)',
        page_size=1000,
    )
    return shares(listed.deployments)


def mark_deployed(api: Any, deployment: Any) -> Any:
    return update(api, "Deployment", deployment.id, status=enum("Deployment", "DEPLOYED"))


# --------------------------------------------------------------------------- DeployModelVersion


def test_first_deploy_takes_all_traffic_and_later_ones_scale_the_others(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    v1, v2, v3 = (version_of(api, model) for _ in range(3))

    first = deploy(api, endpoint, v1)
    assert first.deployment.traffic_split == 100
    assert short("Deployment", first.deployment.status) == "DEPLOYING"
    assert (first.deployment.endpoint_id, first.deployment.model_version_id) == (endpoint.id, v1.id)
    assert first.model_version == get(api, "ModelVersion", v1.id)
    assert shares(first.deployments) == {first.deployment.id: 100}

    second = deploy(api, endpoint, v2, share=30, min_replicas=2, max_replicas=4)
    assert (second.deployment.min_replicas, second.deployment.max_replicas) == (2, 4)
    assert shares(second.deployments) == {first.deployment.id: 70, second.deployment.id: 30}

    third = deploy(api, endpoint, v3, share=10)
    expected = {first.deployment.id: 63, second.deployment.id: 27, third.deployment.id: 10}
    assert shares(third.deployments) == expected == active(api, endpoint)
    assert [d.id for d in third.deployments] == list(expected)  # In creation order.


def test_deploy_rounds_by_largest_remainder(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    a = deploy(api, endpoint, version_of(api, model)).deployment
    b = deploy(api, endpoint, version_of(api, model), share=50).deployment  # a: 50, b: 50
    c = deploy(api, endpoint, version_of(api, model), share=67).deployment  # 16.5 + 16.5 = 33
    assert active(api, endpoint) == {a.id: 17, b.id: 16, c.id: 67}


def test_deploy_defaults_to_no_traffic_beside_serving_deployments(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    first = deploy(api, endpoint, version_of(api, model)).deployment
    canary = deploy(api, endpoint, version_of(api, model), min_replicas=3)
    assert canary.deployment.traffic_split == 0
    assert canary.deployment.max_replicas == 3  # max_replicas defaults to min_replicas.
    assert shares(canary.deployments) == {first.id: 100, canary.deployment.id: 0}


def test_deploy_registers_a_new_version_in_the_same_transaction(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    version_of(api, model)
    new = message("ModelVersion", storage_path="gs://bucket/v2", metrics={"accuracy": 0.97})
    deployed = deploy(api, endpoint, model_version=new, share=100)
    assert deployed.model_version.model_id == model.id
    assert deployed.model_version.version == 2
    assert deployed.model_version.storage_path == "gs://bucket/v2"
    assert deployed.deployment.model_version_id == deployed.model_version.id
    assert get(api, "ModelVersion", deployed.model_version.id) == deployed.model_version


def test_a_version_of_another_model_is_failed_precondition_and_changes_nothing(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    first = deploy(api, endpoint, version_of(api, model)).deployment
    other = api.create("Model")

    error = refused(lambda: deploy(api, endpoint, version_of(api, other), share=50), Code.FAILED_PRECONDITION)
    assert other.id in error.details() and model.id in error.details()
    stranger = message("ModelVersion", model_id=other.id, storage_path="gs://x")
    refused(lambda: deploy(api, endpoint, model_version=stranger, share=50), Code.FAILED_PRECONDITION)

    assert active(api, endpoint) == {first.id: 100}
    versions = api.call("ModelVersion", "ListModelVersions", filter=f'model_id = "{other.id}"').model_versions
    assert len(versions) == 1  # The refused new version was not registered.


def test_a_new_version_cannot_ask_to_be_deployed(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    new = message("ModelVersion", status=enum("ModelVersion", "DEPLOYED"))
    error = refused(lambda: deploy(api, endpoint, model_version=new), Code.FAILED_PRECONDITION)
    assert "model_version" in error.details()
    assert active(api, endpoint) == {}


def test_the_first_deployment_must_take_all_traffic(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    error = refused(lambda: deploy(api, endpoint, version_of(api, model), share=60), Code.FAILED_PRECONDITION)
    assert "40%" in error.details()
    assert active(api, endpoint) == {}


def test_deploy_checks_its_request(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    version = version_of(api, model)
    missing = message("Endpoint", id=str(uuid.uuid4()))
    refused(lambda: deploy(api, missing, version), Code.NOT_FOUND)
    refused(lambda: deploy(api, endpoint, model_version_id=str(uuid.uuid4())), Code.NOT_FOUND)
    assert_invalid(refused(lambda: deploy(api, endpoint), Code.INVALID_ARGUMENT), "model_version_id")
    assert_invalid(refused(lambda: deploy(api, endpoint, version, machine_type=""), Code.INVALID_ARGUMENT), "machine_type")
    assert_invalid(refused(lambda: deploy(api, endpoint, version, share=101), Code.INVALID_ARGUMENT), "traffic_split")
    assert_invalid(refused(lambda: deploy(api, endpoint, model_version_id="v1"), Code.INVALID_ARGUMENT), "model_version_id")
    assert_invalid(refused(lambda: deploy(api, message("Endpoint", id="e"), version), Code.INVALID_ARGUMENT), "endpoint_id")
    error = refused(lambda: deploy(api, endpoint, version, min_replicas=3, max_replicas=2), Code.INVALID_ARGUMENT)
    assert "max_replicas" in error.details()
    assert active(api, endpoint) == {}


def test_a_repeated_request_id_returns_the_first_deployment(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    version = version_of(api, model)
    request_id = str(uuid.uuid4())
    first = deploy(api, endpoint, version, request_id=request_id)
    again = deploy(api, endpoint, version, request_id=request_id)
    assert again.deployment.id == first.deployment.id
    assert shares(again.deployments) == {first.deployment.id: 100}

    error = refused(lambda: deploy(api, endpoint, version, share=0, request_id=request_id), Code.INVALID_ARGUMENT)
    assert_invalid(error, "request_id")
    assert active(api, endpoint) == {first.deployment.id: 100}


def test_eight_concurrent_deploys_to_one_endpoint_end_at_exactly_100(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    first = deploy(api, endpoint, version_of(api, model)).deployment
    requested = [5, 10, 15, 20, 25, 30, 35, 40]

    def one(share: int) -> Any:
        new = message("ModelVersion", storage_path=f"gs://bucket/{share}")
        return deploy(api, endpoint, model_version=new, share=share, request_id=str(uuid.uuid4()))

    with ThreadPoolExecutor(max_workers=len(requested)) as pool:
        responses = list(pool.map(one, requested))

    for share, response in zip(requested, responses):
        assert response.deployment.traffic_split == share
        assert sum(d.traffic_split for d in response.deployments) == 100
        assert shares(response.deployments)[response.deployment.id] == share
    final = active(api, endpoint)
    assert set(final) == {first.id} | {r.deployment.id for r in responses}
    assert sum(final.values()) == 100
    # Every deploy registered its own version: numbers 2..9, each once.
    assert sorted(r.model_version.version for r in responses) == list(range(2, 10))


# --------------------------------------------------------------------------- UndeployModelVersion


def undeploy(api: Any, endpoint: Any, deployment: Any) -> Any:
    return api.call("Endpoint", "UndeployModelVersion", endpoint_id=endpoint.id, deployment_id=deployment.id)


def test_undeploy_keeps_the_row_and_scales_the_others_back_to_100(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    version = version_of(api, model, "VALIDATED")
    a = deploy(api, endpoint, version).deployment
    b = deploy(api, endpoint, version_of(api, model), share=20).deployment
    c = deploy(api, endpoint, version_of(api, model), share=40).deployment  # a 48, b 12, c 40
    mark_deployed(api, a)
    assert short("ModelVersion", get(api, "ModelVersion", version.id).status) == "DEPLOYED"

    response = undeploy(api, endpoint, a)
    assert short("Deployment", response.deployment.status) == "UNDEPLOYED"
    assert response.deployment.traffic_split == 0
    assert shares(response.deployments) == {b.id: 23, c.id: 77} == active(api, endpoint)  # 12:40 of 100
    assert get(api, "Deployment", a.id) == response.deployment
    assert short("ModelVersion", get(api, "ModelVersion", version.id).status) == "VALIDATED"

    assert undeploy(api, endpoint, a).deployment == response.deployment  # A retry changes nothing.


def test_only_a_deployed_deployment_of_this_endpoint_is_undeployed(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    deploying = deploy(api, endpoint, version_of(api, model)).deployment
    assert_illegal_move(refused(lambda: undeploy(api, endpoint, deploying), Code.FAILED_PRECONDITION), "DEPLOYING", "UNDEPLOYED")
    assert active(api, endpoint) == {deploying.id: 100}

    _, elsewhere = endpoint_of(api)
    error = refused(lambda: undeploy(api, elsewhere, deploying), Code.FAILED_PRECONDITION)
    assert endpoint.id in error.details()
    refused(lambda: undeploy(api, endpoint, message("Deployment", id=str(uuid.uuid4()))), Code.NOT_FOUND)
    assert_invalid(refused(lambda: undeploy(api, endpoint, message("Deployment")), Code.INVALID_ARGUMENT), "deployment_id")


def test_undeploying_the_last_deployment_leaves_no_traffic(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    only = mark_deployed(api, deploy(api, endpoint, version_of(api, model)).deployment)
    assert list(undeploy(api, endpoint, only).deployments) == []


# --------------------------------------------------------------------------- the invariant on plain writes


def plain(api: Any, endpoint: Any, version: Any, share: int, state: str = "PENDING") -> Any:
    return api.create(
        "Deployment", endpoint_id=endpoint.id, model_version_id=version.id, traffic_split=share,
        status=enum("Deployment", state),
    )


def test_plain_creates_and_updates_keep_active_shares_within_100(api: Any) -> None:
    model, endpoint = endpoint_of(api)
    version = version_of(api, model)
    a = plain(api, endpoint, version, 60, "DEPLOYED")
    error = refused(lambda: plain(api, endpoint, version, 50), Code.FAILED_PRECONDITION)
    assert "110%" in error.details() and endpoint.id in error.details()
    b = plain(api, endpoint, version, 40, "DEPLOYING")
    plain(api, endpoint, version, 0)  # A share of 0 always fits.

    refused(lambda: update(api, "Deployment", b.id, traffic_split=41), Code.FAILED_PRECONDITION)
    assert update(api, "Deployment", b.id, traffic_split=30).traffic_split == 30
    update(api, "Deployment", a.id, status=enum("Deployment", "UNDEPLOYED"))  # Frees its 60.
    assert plain(api, endpoint, version, 70).traffic_split == 70
    plain(api, endpoint, version, 90, "FAILED")  # Inactive: stored with 0, counts nothing.
    assert sum(active(api, endpoint).values()) == 100


def test_inline_and_batch_creates_keep_the_invariant_all_or_nothing(api: Any) -> None:
    model = api.create("Model")
    version = version_of(api, model)
    inline = [message("Deployment", model_version_id=version.id, machine_type="m", traffic_split=s) for s in (60, 50)]
    endpoint = api.sample("Endpoint", model_id=model.id)
    endpoint.deployments.extend(inline)
    error = refused(lambda: api.call("Endpoint", "CreateEndpoint", endpoint=endpoint), Code.FAILED_PRECONDITION)
    assert "deployments[1]" in error.details()
    listed = api.call("Endpoint", "ListEndpoints", filter=f'model_id = "{model.id}"').endpoints
    assert list(listed) == []

    _, target = endpoint_of(api)
    requests = [
        message("CreateDeploymentRequest", deployment=message(
            "Deployment", endpoint_id=target.id, model_version_id=version.id, machine_type="m", traffic_split=s))
        for s in (30, 30, 50)
    ]
    error = refused(lambda: api.call("Deployment", "BatchCreateDeployments", requests=requests), Code.FAILED_PRECONDITION)
    assert "requests[2]" in error.details()
    assert active(api, target) == {}


# --------------------------------------------------------------------------- RollbackCloudRunService


def revision(api: Any, service: Any, name: str, state: str, percent: int) -> Any:
    return api.create(
        "ServiceDeployment", cloud_run_service_id=service.id, revision=name,
        status=enum("ServiceDeployment", state), traffic_percent=percent,
    )


def rollback(api: Any, service: Any) -> Any:
    return api.call("CloudRunService", "RollbackCloudRunService", id=service.id)


def test_rollback_serves_the_previous_active_revision_again(api: Any) -> None:
    service = api.create("CloudRunService")
    oldest = revision(api, service, "app-00001", "ACTIVE", 10)
    revision(api, service, "app-00002", "FAILED", 0)
    previous = revision(api, service, "app-00003", "ACTIVE", 0)
    current = revision(api, service, "app-00004", "ACTIVE", 90)

    response = rollback(api, service)
    assert response.active.id == previous.id
    assert (short("ServiceDeployment", response.active.status), response.active.traffic_percent) == ("ACTIVE", 100)
    assert response.rolled_back.id == current.id
    assert short("ServiceDeployment", response.rolled_back.status) == "ROLLED_BACK"
    assert response.rolled_back.traffic_percent == 0
    assert get(api, "ServiceDeployment", oldest.id).traffic_percent == 0  # Only one revision serves.

    # Rolling back again goes one further; then nothing older is left.
    again = rollback(api, service)
    assert (again.active.id, again.rolled_back.id) == (oldest.id, previous.id)
    error = refused(lambda: rollback(api, service), Code.FAILED_PRECONDITION)
    assert "app-00001" in error.details()
    # A rolled back revision stays rolled back.
    assert_illegal_move(
        refused(lambda: update(api, "ServiceDeployment", current.id, status=enum("ServiceDeployment", "ACTIVE")),
                Code.FAILED_PRECONDITION),
        "ROLLED_BACK", "ACTIVE",
    )


def test_rollback_needs_an_active_revision(api: Any) -> None:
    service = api.create("CloudRunService")
    refused(lambda: rollback(api, service), Code.FAILED_PRECONDITION)
    revision(api, service, "app-00001", "DEPLOYING", 0)
    error = refused(lambda: rollback(api, service), Code.FAILED_PRECONDITION)
    assert "no ACTIVE revision" in error.details()
    refused(lambda: rollback(api, message("CloudRunService", id=str(uuid.uuid4()))), Code.NOT_FOUND)
    assert_invalid(refused(lambda: rollback(api, message("CloudRunService", id="x")), Code.INVALID_ARGUMENT), "id")
