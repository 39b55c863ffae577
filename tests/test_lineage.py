"""LineageService.GetLineage (server/lineage.py) through a real channel.

One module-wide graph under one workflow, with a twin chain beside the one asked about:

    W ─ D1 (versions v1, v2) ─ TJ1 (lr 0.01) ─ MV1 ─ Dep1 ─ EP1 ─ P (a prediction)
      └ D2 ────────────────── TJ2 (lr 0.1)  ─ MV2 ─ Dep2 ─ EP2        (same workflow,
                                                                       experiment, model)
    MV3: a version of the same model that nothing produced and nothing serves.
"""
from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from tests.support import assert_invalid, message, refused
from versatil.ml.v1 import lineage_service_pb2 as pb
from versatil.ml.v1 import lineage_service_pb2_grpc

Code = grpc.StatusCode
UP, DOWN, BOTH = pb.LINEAGE_DIRECTION_UPSTREAM, pb.LINEAGE_DIRECTION_DOWNSTREAM, pb.LINEAGE_DIRECTION_BOTH


@pytest.fixture(scope="module")
def g(api: Any) -> SimpleNamespace:
    w = api.create("Workflow")
    d1 = api.create(
        "Dataset", workflow_id=w.id,
        versions=[message("DatasetVersion", storage_path=f"gs://bucket/d1/v{i}") for i in (1, 2)],
    )
    d2 = api.create("Dataset", workflow_id=w.id)
    experiment = api.create("Experiment", workflow_id=w.id)
    tj1 = api.create("TrainingJob", experiment_id=experiment.id, dataset_id=d1.id, hyperparameters={"lr": 0.01})
    tj2 = api.create("TrainingJob", experiment_id=experiment.id, dataset_id=d2.id, hyperparameters={"lr": 0.1})
    model = api.create("Model", workflow_id=w.id)
    mv1 = api.create("ModelVersion", model_id=model.id, training_job_id=tj1.id)
    mv2 = api.create("ModelVersion", model_id=model.id, training_job_id=tj2.id)
    mv3 = api.create("ModelVersion", model_id=model.id)
    ep1 = api.create("Endpoint", model_id=model.id)
    ep2 = api.create("Endpoint", model_id=model.id)
    dep1 = api.create("Deployment", endpoint_id=ep1.id, model_version_id=mv1.id, traffic_split=100)
    dep2 = api.create("Deployment", endpoint_id=ep2.id, model_version_id=mv2.id, traffic_split=100)
    prediction = api.create("Prediction", endpoint_id=ep1.id, model_version_id=mv1.id)
    return SimpleNamespace(
        w=w, d1=d1, dv1=d1.versions[0], dv2=d1.versions[1], d2=d2, experiment=experiment, tj1=tj1, tj2=tj2,
        model=model, mv1=mv1, mv2=mv2, mv3=mv3, ep1=ep1, ep2=ep2, dep1=dep1, dep2=dep2, prediction=prediction,
    )


def lineage(api: Any, resource_type: str, resource_id: str, direction: int = 0, max_depth: int = 0) -> Any:
    stub = lineage_service_pb2_grpc.LineageServiceStub(api.channel)
    return stub.GetLineage(
        pb.GetLineageRequest(resource_type=resource_type, id=resource_id, direction=direction, max_depth=max_depth)
    )


def walked(response: Any) -> dict[str, tuple[str, int]]:
    """id -> (resource type, depth) of the nodes walked through (not context)."""
    return {n.id: (n.resource_type, n.depth) for n in response.nodes if not n.context}


def context(response: Any) -> set[str]:
    return {n.id for n in response.nodes if n.context}


def edges(response: Any) -> set[tuple[str, str, str]]:
    return {(e.source_id, e.target_id, e.relation) for e in response.edges}


def test_which_endpoints_serve_models_trained_on_this_dataset(api: Any, g: SimpleNamespace) -> None:
    response = lineage(api, "Dataset", g.d1.id, DOWN)
    assert walked(response) == {
        g.d1.id: ("Dataset", 0),
        g.tj1.id: ("TrainingJob", 1),
        g.mv1.id: ("ModelVersion", 2),
        g.dep1.id: ("Deployment", 3),
        g.ep1.id: ("Endpoint", 4),
    }
    endpoints = [n.endpoint for n in response.nodes if n.resource_type == "Endpoint"]
    assert [e.id for e in endpoints] == [g.ep1.id]  # Never EP2, the other endpoint of the workflow.
    assert context(response) == {g.w.id, g.experiment.id, g.model.id}
    assert edges(response) == {
        (g.d1.id, g.tj1.id, "trains"),
        (g.tj1.id, g.mv1.id, "produced"),
        (g.mv1.id, g.dep1.id, "deployed_as"),
        (g.dep1.id, g.ep1.id, "serves_on"),
        (g.w.id, g.d1.id, "contains"),
        (g.experiment.id, g.tj1.id, "contains"),
        (g.model.id, g.mv1.id, "contains"),
        (g.model.id, g.ep1.id, "contains"),
    }
    assert response.nodes[0].dataset == api.call("Dataset", "GetDataset", id=g.d1.id)  # The start, as Get returns it.


def test_which_dataset_and_hyperparameters_produced_the_model_serving_this_endpoint(
    api: Any, g: SimpleNamespace
) -> None:
    response = lineage(api, "Endpoint", g.ep1.id, UP)
    nodes = {n.id: n for n in response.nodes}
    assert set(walked(response)) == {g.ep1.id, g.dep1.id, g.mv1.id, g.tj1.id, g.d1.id, g.dv1.id, g.dv2.id}
    job = nodes[g.tj1.id].training_job
    assert json_format.MessageToDict(job.hyperparameters) == {"lr": 0.01}
    assert nodes[g.d1.id].dataset.storage_path == g.d1.storage_path
    assert (nodes[g.dv1.id].name, nodes[g.dv2.id].name) == ("v1", "v2")
    assert nodes[g.d1.id].name == g.d1.name and nodes[g.tj1.id].name == ""
    # Edges point downstream whichever way the walk went.
    assert {(g.d1.id, g.tj1.id, "trains"), (g.dv1.id, g.d1.id, "version_of")} <= edges(response)
    for twin in (g.d2.id, g.tj2.id, g.mv2.id, g.dep2.id, g.ep2.id, g.mv3.id, g.prediction.id):
        assert twin not in nodes


def test_max_depth_bounds_the_walk(api: Any, g: SimpleNamespace) -> None:
    response = lineage(api, "Dataset", g.d1.id, DOWN, max_depth=2)
    assert set(walked(response)) == {g.d1.id, g.tj1.id, g.mv1.id}
    assert max(depth for _, depth in walked(response).values()) == 2
    one = lineage(api, "Endpoint", g.ep1.id, UP, max_depth=1)
    assert set(walked(one)) == {g.ep1.id, g.dep1.id}


def test_both_directions_walk_each_way_from_the_start_only(api: Any, g: SimpleNamespace) -> None:
    response = lineage(api, "ModelVersion", g.mv1.id)  # BOTH by default
    assert set(walked(response)) == {g.mv1.id, g.tj1.id, g.d1.id, g.dv1.id, g.dv2.id, g.dep1.id, g.ep1.id}
    assert walked(response)[g.dv1.id] == ("DatasetVersion", 3)
    assert lineage(api, "ModelVersion", g.mv1.id, BOTH) == response


def test_a_prediction_leads_to_its_model_version_and_names_its_endpoint(api: Any, g: SimpleNamespace) -> None:
    response = lineage(api, "Prediction", g.prediction.id, UP)
    assert set(walked(response)) == {g.prediction.id, g.mv1.id, g.tj1.id, g.d1.id, g.dv1.id, g.dv2.id}
    assert g.ep1.id in context(response)
    assert (g.ep1.id, g.prediction.id, "served") in edges(response)
    assert (g.mv1.id, g.prediction.id, "predicted") in edges(response)
    assert g.dep1.id not in {n.id for n in response.nodes}  # The endpoint is context, not walked.
    # No walk goes down into predictions.
    assert g.prediction.id not in {n.id for n in lineage(api, "ModelVersion", g.mv1.id, DOWN).nodes}


def test_a_dataset_version_leads_downstream_through_its_dataset(api: Any, g: SimpleNamespace) -> None:
    response = lineage(api, "DatasetVersion", g.dv2.id, DOWN)
    assert walked(response)[g.ep1.id] == ("Endpoint", 5)
    assert g.dv1.id not in walked(response)
    assert lineage(api, "Deployment", g.dep2.id, DOWN).nodes[1].endpoint.id == g.ep2.id


def test_a_version_nothing_produced_or_serves_stands_alone(api: Any, g: SimpleNamespace) -> None:
    response = lineage(api, "ModelVersion", g.mv3.id)
    assert set(walked(response)) == {g.mv3.id}
    assert context(response) == {g.model.id}


def test_bad_requests(api: Any, g: SimpleNamespace) -> None:
    assert_invalid(refused(lambda: lineage(api, "Model", g.model.id), Code.INVALID_ARGUMENT), "resource_type")
    assert_invalid(refused(lambda: lineage(api, "Dataset", "d1"), Code.INVALID_ARGUMENT), "id")
    assert_invalid(refused(lambda: lineage(api, "Dataset", ""), Code.INVALID_ARGUMENT), "id")
    for depth in (-1, 11):
        assert_invalid(refused(lambda: lineage(api, "Dataset", g.d1.id, max_depth=depth), Code.INVALID_ARGUMENT), "max_depth")
    assert_invalid(refused(lambda: lineage(api, "Dataset", g.d1.id, direction=9), Code.INVALID_ARGUMENT), "direction")
    error = refused(lambda: lineage(api, "Dataset", g.tj1.id), Code.NOT_FOUND)  # An id of another type.
    assert "Dataset" in error.details()
    refused(lambda: lineage(api, "Endpoint", str(uuid.uuid4())), Code.NOT_FOUND)
