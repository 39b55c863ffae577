"""Query power through the real channel (issue 3): the filter examples of API.md and the issue,
filter errors, expand, read_mask, skip and total size, upserts, etag checks and batch request ids.

Every test makes its own rows and scopes its lists to them (a fresh parent id or a unique value
of a field the test sets), so rows of other tests never match. ``created_by`` cannot scope: the
server stamps it with the caller's principal, the same for every test. Statement counts and
SELECT texts are read with a spy on ``models.database.execute_sql``: the server runs in this
process (see the ``channel`` fixture in conftest.py).
"""
from __future__ import annotations

import datetime
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from grpc_status import rpc_status

import models
from conftest import bad_request_fields, message, unique
from tests.conftest import RESOURCES

# =========================================================================== helpers

UTC = datetime.timezone.utc
ENUM_PREFIX = re.compile(r"(?<!^)(?=[A-Z])")


def enum_value(resource: str, field: str, short: str) -> int:
    """The number of ``short`` (``RUNNING``) in the enum of ``resource.field``."""
    enum = RESOURCES[resource].message.DESCRIPTOR.fields_by_name[field].enum_type
    return enum.values_by_name[ENUM_PREFIX.sub("_", enum.name).upper() + "_" + short].number


def full(resource: str, **fields: Any) -> dict[str, Any]:
    """``fields`` with short enum names (``status="RUNNING"``) turned into numbers."""
    descriptor = RESOURCES[resource].message.DESCRIPTOR
    return {
        name: enum_value(resource, name, value)
        if descriptor.fields_by_name[name].enum_type is not None and isinstance(value, str)
        else value
        for name, value in fields.items()
    }


def create(api: Any, resource: str, **fields: Any) -> Message:
    """Create a sample ``resource`` (parents made as needed) with ``fields`` overriding it."""
    return api.create(resource, **full(resource, **fields))


def create_exact(api: Any, resource: str, **fields: Any) -> Message:
    """Create exactly ``fields``: no sample values, so optional fields can stay unset (NULL)."""
    request = {RESOURCES[resource].singular: message(resource, **full(resource, **fields))}
    return api.call(resource, f"Create{resource}", **request)


def items(resource: str, response: Message) -> list[Message]:
    return list(getattr(response, RESOURCES[resource].plural))


def list_all(api: Any, resource: str, filter_text: str, **fields: Any) -> list[Message]:
    """Every row matching ``filter_text``, following next_page_token to the end."""
    found: list[Message] = []
    token = ""
    while True:
        response = api.call(resource, f"List{resource}s", filter=filter_text, page_token=token, **fields)
        found += items(resource, response)
        token = response.next_page_token
        if not token:
            return found


def ids(found: list[Message]) -> list[str]:
    return [item.id for item in found]


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def assert_code(call: Callable[[], Any], code: grpc.StatusCode, *contains: str) -> str:
    """The call fails with ``code`` and a message holding every string of ``contains``."""
    error = rpc_error(call)
    assert error.code() == code, (error.code(), error.details())
    for text in contains:
        assert text in (error.details() or ""), (text, error.details())
    return error.details() or ""


def invalid(call: Callable[[], Any], field: str, *contains: str) -> str:
    """INVALID_ARGUMENT naming ``field`` in a BadRequest, with a message holding ``contains``."""
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in bad_request_fields(error), (field, bad_request_fields(error), error.details())
    for text in contains:
        assert text in (error.details() or ""), (text, error.details())
    return error.details() or ""


def list_filter(api: Any, resource: str, filter_text: str) -> Callable[[], Any]:
    return lambda: api.call(resource, f"List{resource}s", filter=filter_text)


def stamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def set_created_at(resource: str, resource_id: str, moment: datetime.datetime) -> None:
    """created_at is output only: move it by hand to test time filters."""
    model = RESOURCES[resource].model
    with models.database.connection_context():
        model.update(created_at=moment).where(model.id == uuid.UUID(resource_id)).execute()


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


# =========================================================================== filter examples
#
# Each builder makes rows for one example and returns (scope, expected ids[, values]): the
# example is ANDed with ``scope`` so only the builder's rows are listed; ``values`` fill in
# placeholders of the example (ids only known once the rows exist).

EXAMPLES: dict[str, tuple[str, str]] = {}
BUILDERS: dict[str, Callable[[Any], tuple]] = {}


def filter_example(name: str, resource: str, filter_text: str) -> Callable:
    def register(builder: Callable[[Any], tuple]) -> Callable:
        EXAMPLES[name] = (resource, filter_text)
        BUILDERS[name] = builder
        return builder

    return register


@filter_example("running-since", "TrainingJob", 'status = RUNNING AND created_at >= "2026-01-01T00:00:00Z"')
def _running_since(api: Any) -> tuple[str, set[str]]:
    experiment = create(api, "Experiment")
    dataset = create(api, "Dataset", workflow_id=experiment.workflow_id)

    def job(status: str, created: datetime.datetime | None = None) -> str:
        made = create(api, "TrainingJob", experiment_id=experiment.id, dataset_id=dataset.id, status=status).id
        if created is not None:
            set_created_at("TrainingJob", made, created)
        return made

    recent = job("RUNNING")
    exactly = job("RUNNING", datetime.datetime(2026, 1, 1, tzinfo=UTC))
    job("RUNNING", datetime.datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    job("QUEUED")
    job("SUCCEEDED", datetime.datetime(2026, 3, 1, tzinfo=UTC))
    return f'experiment_id = "{experiment.id}"', {recent, exactly}


class PredictionsOf:
    """Predictions under one fresh endpoint."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.endpoint = create(api, "Endpoint")
        self.version = create(api, "ModelVersion", model_id=self.endpoint.model_id)
        self.scope = f'endpoint_id = "{self.endpoint.id}"'

    def add(self, **fields: Any) -> str:
        return create_exact(
            self.api, "Prediction", endpoint_id=self.endpoint.id, model_version_id=self.version.id,
            input={"x": 1}, **fields,
        ).id


@filter_example("not-latency", "Prediction", "NOT (latency > 500)")
def _not_latency(api: Any) -> tuple[str, set[str]]:
    p = PredictionsOf(api)
    kept = {p.add(latency=100), p.add(latency=500), p.add(latency=0)}
    p.add(latency=501)
    p.add(latency=900)
    return p.scope, kept


@filter_example("name-wildcard", "Model", 'name = "resnet*"')
def _name_wildcard(api: Any) -> tuple[str, set[str]]:
    workflow = create(api, "Workflow")
    names = {name: create(api, "Model", workflow_id=workflow.id, name=name).id
             for name in ["resnet50", "resnet", "resnet_v2", "myresnet", "ResNet50", "resne"]}
    return f'workflow_id = "{workflow.id}"', {names["resnet50"], names["resnet"], names["resnet_v2"]}


@filter_example("confidence-or-failed", "Prediction", "(confidence < 0.5) OR (status = FAILED)")
def _confidence_or_failed(api: Any) -> tuple[str, set[str]]:
    p = PredictionsOf(api)
    kept = {
        p.add(confidence=0.3, status="COMPLETED"),
        p.add(confidence=0.7, status="FAILED"),
        p.add(status="FAILED"),  # no confidence: unknown OR true is true
        p.add(confidence=0.0, status="PENDING"),
    }
    p.add(confidence=0.7, status="COMPLETED")
    p.add(confidence=0.5, status="PENDING")
    p.add(status="COMPLETED")  # no confidence: unknown OR false is unknown
    return p.scope, kept


@filter_example("completed-at-null", "Prediction", "completed_at = null")
def _completed_at_null(api: Any) -> tuple[str, set[str]]:
    p = PredictionsOf(api)
    kept = {p.add(status="PENDING"), p.add(status="PENDING", latency=3)}
    # (the service stamps completed_at on COMPLETED and FAILED predictions)
    p.add(status="COMPLETED", completed_at=stamp(datetime.datetime(2026, 2, 1, tzinfo=UTC)))
    p.add(status="FAILED")
    return p.scope, kept


@filter_example("status-in", "TrainingJob", "status IN (RUNNING, QUEUED)")
def _status_in(api: Any) -> tuple[str, set[str]]:
    experiment = create(api, "Experiment")
    dataset = create(api, "Dataset", workflow_id=experiment.workflow_id)
    jobs = {status: create(api, "TrainingJob", experiment_id=experiment.id, dataset_id=dataset.id, status=status).id
            for status in ["RUNNING", "QUEUED", "PENDING", "FAILED", "SUCCEEDED"]}
    return f'experiment_id = "{experiment.id}"', {jobs["RUNNING"], jobs["QUEUED"]}


@filter_example("config-framework", "Workflow", 'config.framework = "pytorch"')
def _config_framework(api: Any) -> tuple[str, set[str]]:
    owner = unique("owner")
    configs = [{"framework": "pytorch", "gpus": 2}, {"framework": "tensorflow"}, {}, {"framework": "PyTorch"},
               {"framework": 1}, {"framework": None}, {"other": {"framework": "pytorch"}}]
    made = [create(api, "Workflow", description=owner, config=config).id for config in configs]
    return f'description = "{owner}"', {made[0]}


@filter_example("metrics-accuracy", "ModelVersion", "metrics.accuracy > 0.9")
def _metrics_accuracy(api: Any) -> tuple[str, set[str]]:
    model = create(api, "Model")
    metrics = [{"accuracy": 0.95}, {"accuracy": 1}, {"accuracy": 0.9}, {"accuracy": 0.5}, {"accuracy": "0.99"},
               {}, {"accuracy": None}, {"accuracy": True}, {"loss": 0.95}]
    made = [create(api, "ModelVersion", model_id=model.id, metrics=m).id for m in metrics]
    return f'model_id = "{model.id}"', {made[0], made[1]}


@filter_example("model-framework", "ModelVersion", "model.framework = PYTORCH")
def _model_framework(api: Any) -> tuple[str, set[str]]:
    workflow = create(api, "Workflow")
    torch = create(api, "Model", workflow_id=workflow.id, framework="PYTORCH")
    flow = create(api, "Model", workflow_id=workflow.id, framework="TENSORFLOW")
    kept = {create(api, "ModelVersion", model_id=torch.id).id for _ in range(2)}
    create(api, "ModelVersion", model_id=flow.id)
    return f'model_id IN ("{torch.id}", "{flow.id}")', kept


@filter_example("experiment-workflow", "TrainingJob", 'experiment.workflow_id = "{workflow}"')
def _experiment_workflow(api: Any) -> tuple[str, set[str], dict[str, str]]:
    first = create(api, "Workflow")
    second = create(api, "Workflow")
    dataset = create(api, "Dataset", workflow_id=first.id)
    mine = create(api, "Experiment", workflow_id=first.id)
    theirs = create(api, "Experiment", workflow_id=second.id)
    kept = {create(api, "TrainingJob", experiment_id=mine.id, dataset_id=dataset.id).id for _ in range(2)}
    create(api, "TrainingJob", experiment_id=theirs.id, dataset_id=dataset.id)
    return f'dataset_id = "{dataset.id}"', kept, {"workflow": first.id}


@filter_example("deployments-deployed", "Endpoint", "deployments.status = DEPLOYED")
def _deployments_deployed(api: Any) -> tuple[str, set[str]]:
    model = create(api, "Model")
    version = create(api, "ModelVersion", model_id=model.id)

    def endpoint(*statuses: str) -> str:
        made = create(api, "Endpoint", model_id=model.id).id
        for status in statuses:
            create(api, "Deployment", endpoint_id=made, model_version_id=version.id, status=status)
        return made

    kept = {endpoint("DEPLOYED", "FAILED"), endpoint("DEPLOYED")}
    endpoint("PENDING", "UNDEPLOYED")
    endpoint()
    return f'model_id = "{model.id}"', kept


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_filter_example(api: Any, database_url: str, name: str) -> None:
    resource, filter_text = EXAMPLES[name]
    scope, want, *values = BUILDERS[name](api)
    if values:  # ids only known once the rows exist
        filter_text = filter_text.format(**values[0])
    assert want, "the example must select something"
    got = ids(list_all(api, resource, f"({filter_text}) AND {scope}"))
    assert sorted(got) == sorted(want), filter_text
    # The scope alone lists more rows: the example really filtered.
    assert len(list_all(api, resource, scope)) > len(want)


def test_filter_examples_cover_api_md_and_issue_3() -> None:
    written = {text for _, text in EXAMPLES.values()}
    for text in [
        'status = RUNNING AND created_at >= "2026-01-01T00:00:00Z"', "NOT (latency > 500)", 'name = "resnet*"',
        "(confidence < 0.5) OR (status = FAILED)", "completed_at = null", "status IN (RUNNING, QUEUED)",
        'config.framework = "pytorch"', "metrics.accuracy > 0.9", "model.framework = PYTORCH",
        "deployments.status = DEPLOYED",
    ]:
        assert text in written


# --------------------------------------------------------------------------- literal * % _ \


NAMES = ["a*b", "axb", "ab", "50%off", "50xoff", "a_c", "abc", "back\\slash", "backxslash"]


@pytest.fixture(scope="module")
def named_models(api: Any) -> tuple[str, dict[str, str]]:
    workflow = create(api, "Workflow")
    made = {name: create(api, "Model", workflow_id=workflow.id, name=name).id for name in NAMES}
    return f'workflow_id = "{workflow.id}"', made


@pytest.mark.parametrize(
    "filter_text, wanted",
    [
        (r'name = "a\*b"', ["a*b"]),  # \* is a literal star
        (r'name != "a\*b"', [n for n in NAMES if n != "a*b"]),
        ('name = "a*b"', ["a*b", "axb", "ab"]),  # * is the wildcard
        ('name = "50%off"', ["50%off"]),  # % is literal ...
        ('name = "50%*"', ["50%off"]),  # ... also next to a wildcard
        ('name = "a_c"', ["a_c"]),  # _ is literal ...
        ('name = "a_*"', ["a_c"]),  # ... also next to a wildcard
        ('name = "*_*"', ["a_c"]),
        ('name = "*%*"', ["50%off"]),
        (r'name = "back\\slash"', ["back\\slash"]),  # an escaped backslash
        (r'name = "*\\*"', ["back\\slash"]),
        (r'name IN ("a*b", "ab")', ["a*b", "ab"]),
    ],
)
def test_literal_special_characters(api: Any, named_models: tuple[str, dict[str, str]], filter_text: str, wanted: list[str]) -> None:
    scope, made = named_models
    got = ids(list_all(api, "Model", f"({filter_text}) AND {scope}"))
    assert sorted(got) == sorted(made[name] for name in wanted), filter_text


# =========================================================================== filter errors


def test_unknown_field_names_field_resource_and_position(api: Any) -> None:
    invalid(list_filter(api, "Dataset", "foo = 1"), "filter", 'unknown field "foo" on Dataset at 1:1')
    invalid(list_filter(api, "Dataset", 'size > 1 AND bar = "x"'), "filter", 'unknown field "bar" on Dataset at 1:14')


@pytest.mark.parametrize(
    "resource, filter_text, field, literal",
    [
        ("Dataset", 'size = "big"', "size", '"big"'),
        ("Dataset", "name = 5", "name", "5"),
        ("Dataset", "created_at >= 2026", "created_at", "2026"),
        ("Dataset", 'created_at >= "yesterday"', "created_at", '"yesterday"'),
        ("Dataset", "type = NOPE", "type", "NOPE"),
        ("Dataset", 'name = "x" AND size = "y"', "size", '"y"'),
        ("Dataset", 'workflow_id = "not-a-uuid"', "workflow_id", '"not-a-uuid"'),
        ("Prediction", 'confidence < "high"', "confidence", '"high"'),
        ("Prediction", "latency > 1.5", "latency", "1.5"),
        ("TrainingJob", "(status = RUNNING) OR (status = 7)", "status", "7"),
    ],
)
def test_wrong_type_names_field_and_position(api: Any, resource: str, filter_text: str, field: str, literal: str) -> None:
    column = filter_text.index(literal, filter_text.index(field)) + 1
    invalid(list_filter(api, resource, filter_text), "filter", field, f"at 1:{column}")


@pytest.mark.parametrize(
    "filter_text, position",
    [("size = ", "1:"), ("size = 1 AND", "1:"), ("(size = 1", "1:"), ("size == 1", "1:"), ("size = 1 OR OR size = 2", "1:")],
)
def test_syntax_errors_are_invalid_with_a_position(api: Any, filter_text: str, position: str) -> None:
    invalid(list_filter(api, "Dataset", filter_text), "filter", position)


def test_filter_longer_than_4096_characters_is_invalid(api: Any) -> None:
    def of_length(length: int) -> str:
        text = 'name = "' + "a" * (length - 9) + '"'
        assert len(text) == length
        return text

    assert api.call("Dataset", "ListDatasets", filter=of_length(4096)).datasets == []
    invalid(list_filter(api, "Dataset", of_length(4097)), "filter", "4096")
    invalid(list_filter(api, "Dataset", of_length(100_000)), "filter", "4096")


def nested(levels: int, how: str) -> str:
    """A filter whose AND/OR/NOT nest ``levels`` deep."""
    text = "size = 1"
    for level in range(levels):
        if how == "not":
            text = f"NOT ({text})"
        else:
            operator = "AND" if how == "and" or level % 2 else "OR"
            text = f"size = {level} {operator} ({text})"
    return text


@pytest.mark.parametrize("how", ["not", "and", "mixed"])
def test_filter_nested_deeper_than_32_levels_is_invalid(api: Any, how: str) -> None:
    api.call("Dataset", "ListDatasets", filter=nested(32, how))
    invalid(list_filter(api, "Dataset", nested(33, how)), "filter", "32")
    invalid(list_filter(api, "Dataset", nested(100, how)), "filter", "32")


@pytest.mark.parametrize("levels", [33, 1000, 2000])
def test_deep_parentheses_are_not_an_internal_error(api: Any, levels: int) -> None:
    text = "(" * levels + "size = 1" + ")" * levels
    try:
        api.call("Dataset", "ListDatasets", filter=text)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())


@pytest.mark.parametrize(
    "resource, filter_text",
    [
        ("ModelVersion", "metrics.accuracy > 1e400"),
        ("ModelVersion", "metrics.accuracy = 1e-400"),
        ("ModelVersion", "size > 99999999999999999999"),
        ("Prediction", "latency = 99999999999"),
        ("Prediction", "confidence < 1e400"),
        ("Prediction", "confidence > -1e400"),
    ],
)
def test_extreme_numbers_are_not_an_internal_error(api: Any, resource: str, filter_text: str) -> None:
    try:
        api.call(resource, f"List{resource}s", filter=filter_text, page_size=1)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())


# =========================================================================== expand


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
    workflow = create(api, "Workflow")
    datasets = [create(api, "Dataset", workflow_id=workflow.id) for _ in range(2)]
    versions = {d.id: [create(api, "DatasetVersion", dataset_id=d.id).id for _ in range(3)] for d in datasets}
    model_list = [create(api, "Model", workflow_id=workflow.id) for _ in range(2)]
    model_versions = {m.id: [create(api, "ModelVersion", model_id=m.id).id for _ in range(2)] for m in model_list}
    experiments = [create(api, "Experiment", workflow_id=workflow.id) for _ in range(2)]
    jobs = {
        e.id: [create(api, "TrainingJob", experiment_id=e.id, dataset_id=datasets[i % 2].id).id for i in range(2)]
        for e in experiments
    }
    endpoint = create(api, "Endpoint", model_id=model_list[0].id)
    deployments = {
        version: [create(api, "Deployment", endpoint_id=endpoint.id, model_version_id=version).id for _ in range(2)]
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

    endpoint = create(api, "Endpoint", model_id=model.id)
    prediction = create(api, "Prediction", endpoint_id=endpoint.id, model_version_id=version_id)
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
    row_id = tree.workflow.id if resource == "Workflow" else create(api, resource).id
    invalid(lambda: api.call(resource, f"Get{resource}", id=row_id, expand=expand), "expand")
    invalid(lambda: api.call(resource, f"List{resource}s", expand=expand, page_size=1), "expand")


def test_relation_fields_are_empty_unless_expanded(api: Any, tree: Tree) -> None:
    workflow = api.call("Workflow", "GetWorkflow", id=tree.workflow.id)
    assert not workflow.datasets and not workflow.models and not workflow.experiments
    version = api.call("ModelVersion", "GetModelVersion", id=tree.model_versions[tree.models[0].id][0])
    assert not version.HasField("model") and not version.deployments
    listed = api.call("Dataset", "ListDatasets", filter=f'workflow_id = "{tree.workflow.id}"')
    assert all(not d.versions and not d.HasField("workflow") and not d.training_jobs for d in listed.datasets)
    got = api.call("Dataset", "BatchGetDatasets", ids=ids(tree.datasets))
    assert all(not d.versions for d in got.datasets)


# --------------------------------------------------------------------------- query counts


def _datasets_with_children(api: Any, count: int) -> str:
    """``count`` datasets in a fresh workflow, each with a version and a training job."""
    workflow = create(api, "Workflow")
    experiment = create(api, "Experiment", workflow_id=workflow.id)
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


# =========================================================================== read_mask


def set_fields(item: Message) -> set[str]:
    return {descriptor.name for descriptor, _ in item.ListFields()}


@pytest.fixture(scope="module")
def described_dataset(api: Any) -> Message:
    return create(api, "Dataset", description="long text", metadata={"k": "v"}, size=77, format="parquet")


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
    invalid(lambda: api.call("Dataset", "GetDataset", id=described_dataset.id, read_mask=mask(*paths)), "read_mask")
    invalid(lambda: api.call("Dataset", "ListDatasets", read_mask=mask(*paths)), "read_mask")
    invalid(lambda: api.call("Dataset", "BatchGetDatasets", ids=[described_dataset.id], read_mask=mask(*paths)), "read_mask")


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


# =========================================================================== skip, total size


@pytest.fixture(scope="module")
def seven(api: Any) -> tuple[str, list[str]]:
    workflow = create(api, "Workflow")
    made = [create(api, "Dataset", workflow_id=workflow.id, name=f"d{i}", size=i).id for i in range(7)]
    return f'workflow_id = "{workflow.id}"', made


def page(api: Any, scope: str, **fields: Any) -> Message:
    return api.call("Dataset", "ListDatasets", filter=scope, order_by="size", **fields)


@pytest.mark.parametrize(
    "page_size, skip, first, second",
    [
        (2, 0, [0, 1], [2, 3]),
        (2, 1, [1, 2], [4, 5]),  # the second skip counts from after the first page
        (3, 2, [2, 3, 4], []),
        (2, 6, [6], None),
        (2, 7, [], None),
        (2, 100, [], None),
    ],
)
def test_skip(api: Any, seven: tuple[str, list[str]], page_size: int, skip: int, first: list[int], second: list[int] | None) -> None:
    scope, made = seven
    response = page(api, scope, page_size=page_size, skip=skip)
    assert ids(response.datasets) == [made[i] for i in first]
    if second is None:
        assert response.next_page_token == ""
        return
    following = page(api, scope, page_size=page_size, skip=skip, page_token=response.next_page_token)
    assert ids(following.datasets) == [made[i] for i in second]


def test_negative_skip_is_invalid(api: Any, seven: tuple[str, list[str]]) -> None:
    invalid(lambda: page(api, seven[0], skip=-1), "skip")


@pytest.mark.parametrize(
    "extra, expected",
    [("", 7), (" AND size >= 3", 4), (" AND size > 100", 0), (' AND name = "d*"', 7), (" AND NOT (size = 2)", 6)],
)
def test_total_size_counts_every_matching_row(api: Any, seven: tuple[str, list[str]], extra: str, expected: int) -> None:
    scope = seven[0] + extra
    first = page(api, scope, page_size=2, show_total_size=True)
    assert first.total_size == expected
    if first.next_page_token:
        later = page(api, scope, page_size=2, show_total_size=True, page_token=first.next_page_token, skip=1)
        assert later.total_size == expected
    assert page(api, scope, page_size=2).total_size == 0  # not asked for
    assert page(api, scope, page_size=1000, skip=3, show_total_size=True).total_size == expected


# =========================================================================== writes


def test_update_with_allow_missing_creates_then_updates(api: Any) -> None:
    client_id = str(uuid.uuid4())
    owner = unique("owner")
    workflow = message("Workflow", id=client_id, name="upserted", n8n_workflow_id=owner, description="first")
    created = api.call("Workflow", "UpdateWorkflow", workflow=workflow, allow_missing=True)
    assert created.id == client_id and created.description == "first" and created.etag
    assert api.call("Workflow", "GetWorkflow", id=client_id) == created

    workflow.description = "second"
    updated = api.call("Workflow", "UpdateWorkflow", workflow=workflow, allow_missing=True, update_mask=mask("description"))
    assert updated.id == client_id and updated.description == "second" and updated.etag != created.etag
    assert updated.created_at == created.created_at
    assert ids(list_all(api, "Workflow", f'n8n_workflow_id = "{owner}"')) == [client_id]


def test_update_without_allow_missing_is_not_found(api: Any) -> None:
    workflow = message("Workflow", id=str(uuid.uuid4()), name="x", created_by="tests")
    assert_code(lambda: api.call("Workflow", "UpdateWorkflow", workflow=workflow), grpc.StatusCode.NOT_FOUND)


def test_update_allow_missing_creates_a_child_under_its_parent(api: Any) -> None:
    dataset = create(api, "Dataset")
    client_id = str(uuid.uuid4())
    version = message("DatasetVersion", id=client_id, dataset_id=dataset.id, storage_path="gs://b/v")
    created = api.call("DatasetVersion", "UpdateDatasetVersion", dataset_version=version, allow_missing=True)
    assert created.id == client_id and created.version == 1 and created.dataset_id == dataset.id


@pytest.mark.parametrize("resource", ["Workflow", "Prediction", "ServiceDeployment"])
def test_delete_with_allow_missing_on_an_unknown_id_succeeds(api: Any, resource: str) -> None:
    unknown = str(uuid.uuid4())
    api.call(resource, f"Delete{resource}", id=unknown, allow_missing=True)
    assert_code(lambda: api.call(resource, f"Delete{resource}", id=unknown), grpc.StatusCode.NOT_FOUND)


def test_delete_with_a_stale_etag_is_aborted_and_keeps_the_row(api: Any) -> None:
    workflow = create(api, "Workflow")
    changed = api.call("Workflow", "UpdateWorkflow", workflow=message("Workflow", id=workflow.id, description="new"),
                       update_mask=mask("description"))
    assert changed.etag != workflow.etag
    assert_code(lambda: api.call("Workflow", "DeleteWorkflow", id=workflow.id, etag=workflow.etag), grpc.StatusCode.ABORTED)
    assert api.call("Workflow", "GetWorkflow", id=workflow.id).etag == changed.etag
    api.call("Workflow", "DeleteWorkflow", id=workflow.id, etag=changed.etag)
    assert_code(lambda: api.call("Workflow", "GetWorkflow", id=workflow.id), grpc.StatusCode.NOT_FOUND)


def test_update_with_a_stale_etag_is_aborted(api: Any) -> None:
    workflow = create(api, "Workflow")
    api.call("Workflow", "UpdateWorkflow", workflow=message("Workflow", id=workflow.id, description="a"),
             update_mask=mask("description"))
    stale = message("Workflow", id=workflow.id, description="b", etag=workflow.etag)
    assert_code(lambda: api.call("Workflow", "UpdateWorkflow", workflow=stale, update_mask=mask("description")),
                grpc.StatusCode.ABORTED)
    assert api.call("Workflow", "GetWorkflow", id=workflow.id).description == "a"


def test_batch_create_with_request_ids_is_idempotent(api: Any) -> None:
    endpoint = create(api, "Endpoint")
    version = create(api, "ModelVersion", model_id=endpoint.model_id)
    requests = [
        message("CreatePredictionRequest", request_id=str(uuid.uuid4()), prediction=message(
            "Prediction", endpoint_id=endpoint.id, model_version_id=version.id, input={"i": i}, latency=i))
        for i in range(3)
    ]
    first = api.call("Prediction", "BatchCreatePredictions", requests=requests).predictions
    again = api.call("Prediction", "BatchCreatePredictions", requests=requests).predictions
    assert ids(again) == ids(first)
    assert list(again) == list(first)
    scope = f'endpoint_id = "{endpoint.id}"'
    assert sorted(ids(list_all(api, "Prediction", scope))) == sorted(ids(first))

    # One more new item next to the repeated ones: only it is created.
    extra = message("CreatePredictionRequest", request_id=str(uuid.uuid4()), prediction=message(
        "Prediction", endpoint_id=endpoint.id, model_version_id=version.id, input={"i": 9}, latency=9))
    mixed = api.call("Prediction", "BatchCreatePredictions", requests=[*requests, extra]).predictions
    assert ids(mixed)[:3] == ids(first)
    assert len(list_all(api, "Prediction", scope)) == 4
