"""Partial responses (``read_mask``) and includes (``expand``) for Get, List and BatchGet.

Each relation level of an expand is loaded with one query for all the rows of the level above,
and columns a read mask leaves out are not read: both are checked on the SQL the server ran,
captured by a spy on ``models.database.execute_sql`` (the session server runs in this process,
see the ``channel`` fixture in conftest.py).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

import models
from tests.support import assert_invalid, message, rpc_error


def ids(found: list[Message]) -> list[str]:
    return [item.id for item in found]


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


@dataclass
class Statements:
    """The SQL the server ran, captured by a spy on ``models.database.execute_sql``."""

    sql: list[str]

    def clear(self) -> None:
        self.sql.clear()

    def selects(self) -> list[str]:
        return [s for s in self.sql if s.lstrip().upper().startswith("SELECT")]


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Statements]:
    captured: list[str] = []
    lock = threading.Lock()
    original = models.database.execute_sql

    def spy(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        with lock:
            captured.append(sql)
        return original(sql, params, *args, **kwargs)

    monkeypatch.setattr(models.database, "execute_sql", spy)
    yield Statements(captured)


# --------------------------------------------------------------------------- expand


@dataclass
class Tree:
    """A workflow with two of each child, each with two grandchildren, and deployments."""

    workflow: Message
    datasets: list[Message]
    versions: dict[str, list[str]]  # dataset id -> version ids
    models: list[Message]
    model_versions: dict[str, list[str]]  # model id -> version ids
    experiments: list[Message]
    jobs: dict[str, list[str]]  # experiment id -> training job ids
    deployments: dict[str, list[str]]  # model version id -> deployment ids


@pytest.fixture(scope="module")
def tree(api: Any) -> Tree:
    workflow = api.create("Workflow")
    datasets = [api.create("Dataset", workflow_id=workflow.id) for _ in range(2)]
    versions = {d.id: [api.create("DatasetVersion", dataset_id=d.id).id for _ in range(3)] for d in datasets}
    model_list = [api.create("Model", workflow_id=workflow.id) for _ in range(2)]
    model_versions = {m.id: [api.create("ModelVersion", model_id=m.id).id for _ in range(2)] for m in model_list}
    experiments = [api.create("Experiment", workflow_id=workflow.id) for _ in range(2)]
    jobs = {
        e.id: [api.create("TrainingJob", experiment_id=e.id, dataset_id=datasets[i % 2].id).id for i in range(2)]
        for e in experiments
    }
    endpoint = api.create("Endpoint", model_id=model_list[0].id)
    deployments = {
        version: [api.create("Deployment", endpoint_id=endpoint.id, model_version_id=version).id for _ in range(2)]
        for version in model_versions[model_list[0].id]
    }
    return Tree(workflow, datasets, versions, model_list, model_versions, experiments, jobs, deployments)


def test_get_workflow_expands_nested_children_in_creation_order(api: Any, tree: Tree) -> None:
    got = api.call("Workflow", "GetWorkflow", id=tree.workflow.id,
                   expand=["datasets.versions", "models.versions", "experiments.training_jobs"])
    assert ids(got.datasets) == ids(tree.datasets)
    assert [ids(d.versions) for d in got.datasets] == [tree.versions[d.id] for d in tree.datasets]
    assert ids(got.models) == ids(tree.models)
    assert [ids(m.versions) for m in got.models] == [tree.model_versions[m.id] for m in tree.models]
    assert ids(got.experiments) == ids(tree.experiments)
    assert [ids(e.training_jobs) for e in got.experiments] == [tree.jobs[e.id] for e in tree.experiments]
    # Expanded children are whole resources, and only what was asked for is filled.
    assert got.datasets[0].name == tree.datasets[0].name and got.datasets[0].etag
    assert all(not m.versions[0].deployments for m in got.models)
    assert all(not d.training_jobs for d in got.datasets)


def test_three_levels(api: Any, tree: Tree) -> None:
    got = api.call("Workflow", "GetWorkflow", id=tree.workflow.id, expand=["models.versions.deployments"])
    first = got.models[0]
    assert [ids(v.deployments) for v in first.versions] == [tree.deployments[v] for v in tree.model_versions[first.id]]
    assert all(not v.deployments for v in got.models[1].versions)
    assert not got.datasets and not got.experiments


def test_expand_parents(api: Any, tree: Tree) -> None:
    model = tree.models[0]
    version_id = tree.model_versions[model.id][0]
    got = api.call("ModelVersion", "GetModelVersion", id=version_id, expand=["model"])
    assert got.model.id == model.id and got.model.name == model.name and got.model.framework == model.framework

    endpoint = api.create("Endpoint", model_id=model.id)
    prediction = api.create("Prediction", endpoint_id=endpoint.id, model_version_id=version_id)
    got = api.call("Prediction", "GetPrediction", id=prediction.id, expand=["endpoint", "model_version"])
    assert got.endpoint.id == endpoint.id and got.endpoint.name == endpoint.name
    assert got.model_version.id == version_id
    # a parent with its own parent, and a child with a parent
    got = api.call("Prediction", "GetPrediction", id=prediction.id, expand=["model_version.model.workflow"])
    assert got.model_version.model.workflow.id == tree.workflow.id
    got = api.call("Dataset", "GetDataset", id=tree.datasets[0].id, expand=["training_jobs.experiment"])
    assert [j.experiment.id for j in got.training_jobs] == [e.id for e in tree.experiments]


def test_list_expands_every_row(api: Any, tree: Tree) -> None:
    response = api.call("Dataset", "ListDatasets", filter=f'workflow_id = "{tree.workflow.id}"',
                        expand=["versions", "workflow"])
    assert ids(response.datasets) == ids(tree.datasets)
    for dataset in response.datasets:
        assert ids(dataset.versions) == tree.versions[dataset.id]
        assert dataset.workflow.id == tree.workflow.id


@pytest.mark.parametrize(
    "resource, expand",
    [
        ("Workflow", ["nope"]),
        ("Workflow", ["datasets.nope"]),
        ("Workflow", ["datasets", "models.versionz"]),
        ("Workflow", ["name"]),  # a field, not a relation
        ("Prediction", ["predictions"]),
        ("Endpoint", ["predictions"]),  # predictions are too many to expand
        ("Workflow", ["datasets.versions.dataset.workflow"]),  # 4 levels
        ("Workflow", ["models.versions.deployments.endpoint"]),
        ("Workflow", [""]),
        ("Workflow", ["datasets..versions"]),
    ],
)
def test_bad_expand_is_invalid(api: Any, tree: Tree, resource: str, expand: list[str]) -> None:
    row_id = tree.workflow.id if resource == "Workflow" else api.create(resource).id
    assert_invalid(rpc_error(api.call, resource, f"Get{resource}", id=row_id, expand=expand), "expand")
    assert_invalid(rpc_error(api.call, resource, f"List{resource}s", expand=expand, page_size=1), "expand")


def test_relation_fields_are_empty_unless_expanded(api: Any, tree: Tree) -> None:
    workflow = api.call("Workflow", "GetWorkflow", id=tree.workflow.id)
    assert not workflow.datasets and not workflow.models and not workflow.experiments
    version = api.call("ModelVersion", "GetModelVersion", id=tree.model_versions[tree.models[0].id][0])
    assert not version.HasField("model") and not version.deployments
    listed = api.call("Dataset", "ListDatasets", filter=f'workflow_id = "{tree.workflow.id}"')
    assert all(not d.versions and not d.HasField("workflow") and not d.training_jobs for d in listed.datasets)
    got = api.call("Dataset", "BatchGetDatasets", ids=ids(tree.datasets))
    assert all(not d.versions for d in got.datasets)


# --------------------------------------------------------------------------- queries per expand


def _datasets_with_children(api: Any, count: int) -> str:
    """``count`` datasets in a fresh workflow, each with a version and a training job."""
    workflow = api.create("Workflow")
    experiment = api.create("Experiment", workflow_id=workflow.id)
    requests = [
        message("CreateDatasetRequest", dataset=message(
            "Dataset", workflow_id=workflow.id, name=f"d{i:03}", type=1, storage_path="gs://b/d",
            versions=[message("DatasetVersion", storage_path="gs://b/d/v1")],
        ))
        for i in range(count)
    ]
    datasets = api.call("Dataset", "BatchCreateDatasets", requests=requests).datasets
    jobs = [
        message("CreateTrainingJobRequest", training_job=message("TrainingJob", experiment_id=experiment.id, dataset_id=d.id))
        for d in datasets
    ]
    api.call("TrainingJob", "BatchCreateTrainingJobs", requests=jobs)
    return workflow.id


@pytest.mark.parametrize(
    "resource, expand, levels",
    [
        ("Dataset", ["versions", "training_jobs"], 2),
        ("Dataset", ["versions", "training_jobs.experiment", "workflow"], 4),
    ],
)
def test_list_with_expand_uses_a_constant_number_of_queries(
    api: Any, statements: Statements, resource: str, expand: list[str], levels: int
) -> None:
    counts, selects = {}, {}
    for count in (10, 100):
        workflow_id = _datasets_with_children(api, count)
        statements.clear()
        response = api.call(resource, "ListDatasets", filter=f'workflow_id = "{workflow_id}"', page_size=count, expand=expand)
        counts[count], selects[count] = len(statements.sql), len(statements.selects())
        assert len(response.datasets) == count
        assert all(len(d.versions) == 1 and len(d.training_jobs) == 1 for d in response.datasets)
        if "training_jobs.experiment" in expand:
            assert all(d.training_jobs[0].experiment.id for d in response.datasets)
    assert counts[10] == counts[100], (counts, statements.sql)
    assert selects[10] == selects[100] == 1 + levels, (selects, statements.sql)


def test_get_with_three_level_expand_uses_one_query_per_level(api: Any, tree: Tree, statements: Statements) -> None:
    statements.clear()
    api.call("Workflow", "GetWorkflow", id=tree.workflow.id, expand=["models.versions.deployments", "datasets"])
    assert len(statements.selects()) == 1 + 4, statements.sql


# --------------------------------------------------------------------------- read_mask


def set_fields(item: Message) -> set[str]:
    return {descriptor.name for descriptor, _ in item.ListFields()}


@pytest.fixture(scope="module")
def described_dataset(api: Any) -> Message:
    return api.create("Dataset", description="long text", metadata={"k": "v"}, size=77, format="parquet")


@pytest.mark.parametrize(
    "paths",
    [["name"], ["name", "size"], ["id", "description"], ["etag"], ["created_at", "metadata", "workflow_id"]],
)
def test_read_mask_returns_only_the_masked_fields(api: Any, described_dataset: Message, paths: list[str]) -> None:
    dataset = described_dataset
    scope = f'id = "{dataset.id}"'
    got = [
        api.call("Dataset", "GetDataset", id=dataset.id, read_mask=mask(*paths)),
        *api.call("Dataset", "ListDatasets", filter=scope, read_mask=mask(*paths)).datasets,
        *api.call("Dataset", "BatchGetDatasets", ids=[dataset.id], read_mask=mask(*paths)).datasets,
    ]
    assert len(got) == 3
    for item in got:
        assert set_fields(item) == set(paths), (paths, item)
        for path in paths:
            if path != "etag":
                assert getattr(item, path) == getattr(dataset, path), path
        if "etag" in paths:
            assert item.etag == dataset.etag


@pytest.mark.parametrize("paths", [[], ["*"]])
def test_read_mask_star_or_empty_returns_everything(api: Any, described_dataset: Message, paths: list[str]) -> None:
    full_get = api.call("Dataset", "GetDataset", id=described_dataset.id, read_mask=mask(*paths))
    assert full_get == described_dataset
    listed = api.call("Dataset", "ListDatasets", filter=f'id = "{described_dataset.id}"', read_mask=mask(*paths))
    assert list(listed.datasets) == [described_dataset]


@pytest.mark.parametrize("paths", [["nope"], ["name", "nope"], ["datasets.name"], ["metadata.k"]])
def test_read_mask_unknown_path_is_invalid(api: Any, described_dataset: Message, paths: list[str]) -> None:
    read_mask = mask(*paths)
    assert_invalid(rpc_error(api.call, "Dataset", "GetDataset", id=described_dataset.id, read_mask=read_mask), "read_mask")
    assert_invalid(rpc_error(api.call, "Dataset", "ListDatasets", read_mask=read_mask), "read_mask")
    assert_invalid(rpc_error(api.call, "Dataset", "BatchGetDatasets", ids=[described_dataset.id], read_mask=read_mask),
                   "read_mask")


@pytest.mark.parametrize("method", ["GetDataset", "ListDatasets", "BatchGetDatasets"])
def test_read_mask_leaves_unmasked_columns_out_of_the_select(
    api: Any, described_dataset: Message, statements: Statements, method: str
) -> None:
    request = {
        "GetDataset": {"id": described_dataset.id},
        "ListDatasets": {"filter": f'id = "{described_dataset.id}"'},
        "BatchGetDatasets": {"ids": [described_dataset.id]},
    }[method]
    statements.clear()
    api.call("Dataset", method, read_mask=mask("name"), **request)
    (select,) = statements.selects()
    assert '"name"' in select
    for column in ("description", "embedding", "metadata", "storage_path", "format"):
        assert f'"{column}"' not in select, (column, select)
    statements.clear()
    api.call("Dataset", method, read_mask=mask("name", "description"), **request)
    (select,) = statements.selects()
    assert '"description"' in select and '"embedding"' not in select, select


def test_list_filter_on_an_unmasked_column_still_works(api: Any, described_dataset: Message) -> None:
    got = api.call("Dataset", "ListDatasets", filter=f'id = "{described_dataset.id}" AND size = 77',
                   order_by="format desc", read_mask=mask("name"))
    assert [d.name for d in got.datasets] == [described_dataset.name]
