"""The List filter language (AIP-160): comparisons joined by AND, OR and NOT, typed by their field.

The examples of API.md come first, then each kind of field (enums, strings, numbers, timestamps,
ids and null), then errors, which name the field and the position (line:column) at fault. Each
literal is typed by the field it is compared with. Tests scope their lists to rows they made
themselves (a unique value of their own, such as a ``config.owner`` key, or a fresh parent id),
so rows of other tests never match. ``created_by`` is no such value: the server stamps it with the
caller's principal, the same for every test of the session.
"""
from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

import models
from tests.support import RESOURCES, assert_invalid, list_all, message, rpc_error, unique
from tests.support.domain import enum
from tests.support.security import SecuredServer, secured_server

# --------------------------------------------------------------------------- helpers

UTC = datetime.timezone.utc


def listed(api: Any, resource: str, filter_text: str) -> list[str]:
    """Ids of every row matching ``filter_text`` (all pages)."""
    return [item.id for item in list_all(api, resource, filter_text, page_size=1000)]


def invalid_filter(api: Any, resource: str, filter_text: str, *contains: str) -> str:
    """The message of the INVALID_ARGUMENT a bad filter gets, naming ``filter`` and holding ``contains``."""
    error = rpc_error(api.call, resource, f"List{resource}s", filter=filter_text)
    return assert_invalid(error, "filter", *contains).details()


def workflows(api: Any, *specs: dict[str, Any]) -> tuple[str, list[Any]]:
    """Workflows sharing a fresh ``config.owner``; returns a filter matching them and the workflows."""
    owner = unique("owner")
    return owner_is(owner), [api.create("Workflow", config={"owner": owner}, **spec) for spec in specs]


def owner_is(owner: str) -> str:
    return f"config.owner = {quote(owner)}"


def quote(text: str) -> str:
    """A filter string literal: double quotes, backslash escapes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rfc3339(timestamp: Any) -> str:
    return timestamp.ToJsonString()


def full(resource: str, **fields: Any) -> dict[str, Any]:
    """``fields`` with short enum names (``status="RUNNING"``) turned into numbers."""
    descriptor = RESOURCES[resource].message.DESCRIPTOR
    return {
        name: enum(resource, value, name)
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


def stamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def set_created_at(resource: str, resource_id: str, moment: datetime.datetime) -> None:
    """created_at is output only: move it by hand to test time filters."""
    model = RESOURCES[resource].model
    with models.database.connection_context():
        model.update(created_at=moment).where(model.id == uuid.UUID(resource_id)).execute()


# --------------------------------------------------------------------------- the examples of API.md
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
    got = listed(api, resource, f"({filter_text}) AND {scope}")
    assert got, f"{filter_text} selects nothing"
    assert sorted(got) == sorted(want), filter_text
    # The scope alone lists more rows: the example really filtered.
    assert len(listed(api, resource, scope)) > len(want)


def test_filter_examples_cover_api_md() -> None:
    written = {text for _, text in EXAMPLES.values()}
    for text in [
        'status = RUNNING AND created_at >= "2026-01-01T00:00:00Z"', "NOT (latency > 500)", 'name = "resnet*"',
        "(confidence < 0.5) OR (status = FAILED)", "completed_at = null", "status IN (RUNNING, QUEUED)",
        'config.framework = "pytorch"', "metrics.accuracy > 0.9", "model.framework = PYTORCH",
        "deployments.status = DEPLOYED",
    ]:
        assert text in written


# --------------------------------------------------------------------------- enums


ENUM_CASES = [
    # resource, field, stored value numbers, wanted number, filter literals that mean it
    ("Workflow", "status", [1, 2, 3], 2, ["ACTIVE", "WORKFLOW_STATUS_ACTIVE"]),
    ("TrainingJob", "status", [1, 3, 4], 3, ["RUNNING", "TRAINING_JOB_STATUS_RUNNING"]),
    ("PatternRecognitionJob", "status", [1, 3], 3, ["RUNNING", "TRAINING_JOB_STATUS_RUNNING"]),
    ("Model", "framework", [1, 2, 3], 2, ["PYTORCH", "MODEL_FRAMEWORK_PYTORCH"]),
    ("Dataset", "type", [1, 2, 6], 6, ["TIME_SERIES", "DATASET_TYPE_TIME_SERIES"]),
    ("CloudRunService", "status", [1, 2], 2, ["READY", "CLOUD_RUN_SERVICE_STATUS_READY"]),
]


@pytest.mark.parametrize("resource, field, stored, wanted, literals", ENUM_CASES, ids=[c[0] for c in ENUM_CASES])
def test_enum_by_short_and_prefixed_name(api, resource, field, stored, wanted, literals):
    owner = unique("owner")
    scope_field = {"TrainingJob": "experiment_id", "Dataset": "workflow_id", "Model": "workflow_id"}.get(resource)
    extra: dict[str, Any] = {}
    if scope_field:
        parent = "Experiment" if scope_field == "experiment_id" else "Workflow"
        extra[scope_field] = api.create(parent).id
        scope = f'{scope_field} = "{extra[scope_field]}"'
    elif resource == "CloudRunService":
        extra["project_id"] = owner
        scope = f"project_id = {quote(owner)}"
    else:  # Workflow, PatternRecognitionJob
        extra["config"] = {"owner": owner}
        scope = owner_is(owner)
    made = {number: api.create(resource, **extra, **{field: number}) for number in stored}

    for literal in literals:
        assert listed(api, resource, f"{scope} AND {field} = {literal}") == [made[wanted].id], literal
        assert listed(api, resource, f"{field} = {literal} AND {scope}") == [made[wanted].id], literal
    assert sorted(listed(api, resource, scope)) == sorted(m.id for m in made.values())


def test_enum_default_value_is_filterable(api):
    scope, (workflow,) = workflows(api, {})

    assert listed(api, "Workflow", f"{scope} AND status = DRAFT") == [workflow.id]


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    "name, literal",
    [
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("tab\there", r'"tab\there"'),
        ("line\nbreak", r'"line\nbreak"'),
        ("it's", '"it\'s"'),
        ("50%_off", '"50%_off"'),
        ("café ☕ 日本", '"café ☕ 日本"'),
        ("  padded  ", '"  padded  "'),
        ("AND = OR", '"AND = OR"'),
        ("null", '"null"'),
    ],
)
def test_string_literal_with_escapes_matches_exactly(api, name, literal):
    scope, (wanted, _other) = workflows(api, {"name": name + unique("-")}, {"name": unique("decoy")})
    suffix = wanted.name[len(name):]
    literal = literal[:-1] + suffix + '"'

    assert listed(api, "Workflow", f"{scope} AND name = {literal}") == [wanted.id]


def test_percent_and_underscore_are_literal(api):
    scope, (percent, _plain) = workflows(api, {"name": "a%c_e"}, {"name": "abcde"})

    assert listed(api, "Workflow", f'{scope} AND name = "a%c_e"') == [percent.id]
    assert listed(api, "Workflow", f'{scope} AND name = "a%"') == []


def test_string_comparison_is_exact_and_case_sensitive(api):
    scope, (upper, lower) = workflows(api, {"name": "Nightly"}, {"name": "nightly"})

    assert listed(api, "Workflow", f'{scope} AND name = "Nightly"') == [upper.id]
    assert listed(api, "Workflow", f'{scope} AND name = "nightly"') == [lower.id]
    assert listed(api, "Workflow", f'{scope} AND name = "Night"') == []


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
    got = listed(api, "Model", f"({filter_text}) AND {scope}")
    assert sorted(got) == sorted(made[name] for name in wanted), filter_text


# --------------------------------------------------------------------------- numbers


def _predictions(api: Any, *specs: dict[str, Any]) -> tuple[str, list[Any]]:
    endpoint = api.create("Endpoint")
    model_version = api.create("ModelVersion")
    made = [
        api.create("Prediction", endpoint_id=endpoint.id, model_version_id=model_version.id, **spec)
        for spec in specs
    ]
    return f'endpoint_id = "{endpoint.id}"', made


@pytest.mark.parametrize(
    "condition, wanted",
    [
        ("latency = 12", [0]),
        ("latency = 0", [2]),
        ("latency = 7", []),
        ("latency = -1", []),
        ("latency = 99999999999", []),
        ("confidence = 0.25", [0]),
        ("confidence = 2.5e-1", [0]),
        ("confidence = 25E-2", [0]),
        ("confidence = 1", [1]),
        ("confidence = 1.0", [1]),
        ("confidence = 0.3", []),
        ("confidence = null", [2]),
        ("latency = 12 AND confidence = 0.25", [0]),
        ("latency = 12 AND confidence = 1", []),
    ],
)
def test_integers_and_doubles(api, condition, wanted):
    scope, made = _predictions(
        api,
        {"latency": 12, "confidence": 0.25},
        {"latency": 40, "confidence": 1.0},
        {"latency": 0, "confidence": None},
    )

    assert sorted(listed(api, "Prediction", f"{scope} AND {condition}")) == sorted(made[i].id for i in wanted)


def test_bigint_field(api):
    workflow = api.create("Workflow")
    big = api.create("Dataset", workflow_id=workflow.id, size=2**40 + 1)
    api.create("Dataset", workflow_id=workflow.id, size=0)
    scope = f'workflow_id = "{workflow.id}"'

    assert listed(api, "Dataset", f"{scope} AND size = {2**40 + 1}") == [big.id]
    assert listed(api, "Dataset", f"{scope} AND size = {2**40}") == []


def test_zero_is_a_value_not_unset(api):
    project = unique("project")
    zero = api.create("CloudRunService", project_id=project, min_instances=0, max_instances=0)
    api.create("CloudRunService", project_id=project, min_instances=1, max_instances=3)

    assert listed(api, "CloudRunService", f"project_id = {quote(project)} AND max_instances = 0") == [zero.id]


# --------------------------------------------------------------------------- timestamps


START = datetime.datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "literal",
    [
        "2026-03-01T12:00:00.25Z",
        "2026-03-01T12:00:00.250000Z",
        "2026-03-01T12:00:00.250000000Z",
        "2026-03-01T14:00:00.25+02:00",
        "2026-03-01T07:30:00.25-04:30",
        "2026-03-01T12:00:00.25+00:00",
        "2026-03-01t12:00:00.25z",  # RFC 3339 5.6: T and Z may be lower case
    ],
)
def test_timestamp_rfc3339_with_zone(api, literal):
    experiment = api.create("Experiment")
    wanted = api.create("TrainingJob", experiment_id=experiment.id, start_time=START)
    api.create("TrainingJob", experiment_id=experiment.id, start_time=START + datetime.timedelta(microseconds=1))
    api.create("TrainingJob", experiment_id=experiment.id)
    scope = f'experiment_id = "{experiment.id}"'

    assert listed(api, "TrainingJob", f'{scope} AND start_time = "{literal}"') == [wanted.id]


def test_created_at_as_returned_finds_the_row(api):
    scope, made = workflows(api, {}, {}, {})

    for workflow in made:
        literal = rfc3339(workflow.created_at)
        assert listed(api, "Workflow", f'{scope} AND created_at = "{literal}"') == [workflow.id]


@pytest.mark.parametrize("field", ["start_time", "end_time"])
def test_timestamp_null(api, field):
    experiment = api.create("Experiment")
    unset = api.create("TrainingJob", experiment_id=experiment.id)
    api.create("TrainingJob", experiment_id=experiment.id, **{field: START})

    assert listed(api, "TrainingJob", f'experiment_id = "{experiment.id}" AND {field} = null') == [unset.id]


# --------------------------------------------------------------------------- uuids and null


def test_id_filter(api):
    scope, (first, second) = workflows(api, {}, {})

    assert listed(api, "Workflow", f'id = "{first.id}"') == [first.id]
    assert listed(api, "Workflow", f'id = "{second.id.upper()}"') == [second.id]
    assert listed(api, "Workflow", f'id = "{uuid.uuid4()}"') == []
    assert listed(api, "Workflow", f'{scope} AND id = "{second.id}"') == [second.id]


@pytest.mark.parametrize(
    "resource, parent_field, parent",
    [
        ("Dataset", "workflow_id", "Workflow"),
        ("Model", "workflow_id", "Workflow"),
        ("DatasetVersion", "dataset_id", "Dataset"),
        ("Deployment", "endpoint_id", "Endpoint"),
        ("ServiceDeployment", "cloud_run_service_id", "CloudRunService"),
    ],
)
def test_parent_id_filter(api, resource, parent_field, parent):
    parent_id = api.create(parent).id
    mine = [api.create(resource, **{parent_field: parent_id}) for _ in range(2)]
    api.create(resource)  # under another parent

    assert sorted(listed(api, resource, f'{parent_field} = "{parent_id}"')) == sorted(m.id for m in mine)


def test_nullable_foreign_key_null_and_value(api):
    model = api.create("Model")
    job = api.create("TrainingJob")
    linked = api.create("ModelVersion", model_id=model.id, training_job_id=job.id)
    unlinked = api.create("ModelVersion", model_id=model.id)
    scope = f'model_id = "{model.id}"'

    assert listed(api, "ModelVersion", f"{scope} AND training_job_id = null") == [unlinked.id]
    assert listed(api, "ModelVersion", f'{scope} AND training_job_id = "{job.id}"') == [linked.id]


@pytest.mark.parametrize("field", ["description", "n8n_workflow_id"])
def test_string_null(api, field):
    scope, (unset, _given) = workflows(api, {}, {field: "something"})

    assert listed(api, "Workflow", f"{scope} AND {field} = null") == [unset.id]


def test_null_and_empty_string_differ(api):
    scope, (unset, empty) = workflows(api, {}, {"description": ""})

    assert listed(api, "Workflow", f"{scope} AND description = null") == [unset.id]
    assert listed(api, "Workflow", f'{scope} AND description = ""') == [empty.id]


# --------------------------------------------------------------------------- AND and layout


@pytest.fixture(scope="module")
def writers(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[SecuredServer]:
    """A server on the session database where ana and bob are writers: ``created_by`` is the caller's."""
    with secured_server(tmp_path_factory.mktemp("filters"), {"ana": "writer", "bob": "writer"}) as running:
        yield running


def test_and_of_several_comparisons(api, writers):
    endpoint = api.create("Endpoint")
    model_version = api.create("ModelVersion")
    parents = {"endpoint_id": endpoint.id, "model_version_id": model_version.id}
    scope = f'endpoint_id = "{endpoint.id}"'
    specs = [
        ("ana", {"latency": 5, "status": 2, "confidence": None}),
        ("ana", {"latency": 5, "status": 2, "confidence": 0.5}),
        ("ana", {"latency": 5, "status": 3, "confidence": None}),
        ("ana", {"latency": 6, "status": 2, "confidence": None}),
        ("bob", {"latency": 5, "status": 2, "confidence": None}),
    ]
    made = [writers.api(principal).create("Prediction", **parents, **spec) for principal, spec in specs]
    assert [m.created_by for m in made] == [principal for principal, _ in specs]

    found = listed(
        api,
        "Prediction",
        f'{scope} AND status = COMPLETED AND latency = 5 AND confidence = null AND created_by = "ana"',
    )

    assert found == [made[0].id]


@pytest.mark.parametrize("layout", ["{a} AND {b}", "  {a}   AND\n\t{b}  ", "{a}\nAND\n{b}\n"])
def test_whitespace_is_insignificant(api, layout):
    scope, (active, _draft) = workflows(api, {"status": 2}, {"status": 1})
    filter_text = layout.format(a=scope.replace(" ", ""), b="status=ACTIVE")

    assert listed(api, "Workflow", filter_text) == [active.id]


@pytest.mark.parametrize("empty", ["", "   ", "\n\t"])
def test_empty_filter_lists_everything(api, empty):
    endpoint = api.create("Endpoint")
    api.create("Prediction", endpoint_id=endpoint.id)

    response = api.call("Prediction", "ListPredictions", filter=empty, page_size=1)

    assert len(response.predictions) == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "resource, filter_text, field, position",
    [
        ("Workflow", "foo = 1", "foo", "1:1"),
        ("Workflow", 'status = DRAFT AND foo = "x"', "foo", "1:20"),
        ("Workflow", "status = DRAFT AND\n  foo = 1", "foo", "2:3"),
        ("Workflow", 'Name = "x"', "Name", "1:1"),
        ("Dataset", 'workflow = "x"', "workflow", "1:1"),  # the relation, not its id field
        ("Prediction", "latency_ms = 5", "latency_ms", "1:1"),
    ],
)
def test_unknown_field(api, resource, filter_text, field, position):
    text = invalid_filter(api, resource, filter_text)

    assert f'"{field}"' in text or f"'{field}'" in text, text
    assert re.search(rf"(?<![\d:]){position}(?!\d)", text), text


@pytest.mark.parametrize(
    "resource, filter_text, field, position",
    [
        ("Prediction", 'latency = "5"', "latency", "1:11"),
        ("Prediction", "latency = 1.5", "latency", "1:11"),
        ("Prediction", "latency = 1e3", "latency", "1:11"),
        ("Prediction", "latency = PENDING", "latency", "1:11"),
        ("Prediction", 'confidence = "high"', "confidence", "1:14"),
        ("Workflow", "name = 5", "name", "1:8"),
        ("Workflow", "name = DRAFT", "name", "1:8"),
        ("Workflow", "status = RUNNNG", "status", "1:10"),
        ("Workflow", "status = RUNNING", "status", "1:10"),  # an ExperimentStatus, not a WorkflowStatus
        ("Workflow", "status = EXPERIMENT_STATUS_DRAFT", "status", "1:10"),
        ("Workflow", "status = 2", "status", "1:10"),
        ("Workflow", "status = draft", "status", "1:10"),
        ("Workflow", 'created_at = "2026-01-01T00:00:00"', "created_at", "1:14"),
        ("Workflow", 'created_at = "2026-01-01"', "created_at", "1:14"),
        ("Workflow", 'created_at = "yesterday"', "created_at", "1:14"),
        ("Workflow", "created_at = 1767225600", "created_at", "1:14"),
        ("Workflow", 'created_at = "2026-13-01T00:00:00Z"', "created_at", "1:14"),
        ("Workflow", "id = 5", "id", "1:6"),
        ("Workflow", 'id = "abc"', "id", "1:6"),
        ("Dataset", 'workflow_id = "not-a-uuid"', "workflow_id", "1:15"),
        ("Workflow", 'status = DRAFT AND name = 7', "name", "1:27"),
        ("Workflow", "config = 1", "config", "1:10"),  # a whole JSON field is no scalar
        ("Workflow", "embedding = 1", "embedding", "1:13"),
    ],
)
def test_wrong_type(api, resource, filter_text, field, position):
    text = invalid_filter(api, resource, filter_text)

    assert re.search(rf"\b{field}\b", text), f"the message does not name {field!r}: {text}"
    assert re.search(rf"(?<![\d:]){position}(?!\d)", text), f"the message does not say {position}: {text}"


@pytest.mark.parametrize(
    "filter_text",
    [
        "name =",
        "= 3",
        'name = "x" AND',
        'name "x"',
        'name = "unterminated',
        'name == "x"',
        "AND",
        'name = "x" AND AND status = DRAFT',
        'name = "x" status = DRAFT',
        'name = "x" && status = DRAFT',
        "name = 'single quoted'",
        'name = "x";',
        "status = DRAFT AND\n  = 3",
    ],
)
def test_syntax_error(api, filter_text):
    text = invalid_filter(api, "Workflow", filter_text)

    match = re.search(r"(?<![\d:])(\d+):(\d+)(?!\d)", text)
    assert match, f"no line:column position in {text!r}"
    line, column = int(match[1]), int(match[2])
    lines = filter_text.split("\n")
    assert 1 <= line <= len(lines), text
    assert 1 <= column <= len(lines[line - 1]) + 1, text


def test_unknown_field_names_field_resource_and_position(api: Any) -> None:
    invalid_filter(api, "Dataset", "foo = 1", 'unknown field "foo" on Dataset at 1:1')
    invalid_filter(api, "Dataset", 'size > 1 AND bar = "x"', 'unknown field "bar" on Dataset at 1:14')


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
    invalid_filter(api, resource, filter_text, field, f"at 1:{column}")


@pytest.mark.parametrize(
    "filter_text, position",
    [("size = ", "1:"), ("size = 1 AND", "1:"), ("(size = 1", "1:"), ("size == 1", "1:"), ("size = 1 OR OR size = 2", "1:")],
)
def test_syntax_errors_are_invalid_with_a_position(api: Any, filter_text: str, position: str) -> None:
    invalid_filter(api, "Dataset", filter_text, position)


# --------------------------------------------------------------------------- injection-looking input


@pytest.mark.parametrize(
    "name",
    [
        "x'; DROP TABLE workflows; --",
        "x\" OR 1=1 --",
        "') OR ('1'='1",
        "x\\'; SELECT pg_sleep(5); --",
        "$$; DROP TABLE workflows; $$",
    ],
)
def test_injection_is_a_harmless_literal(api, name):
    owner = unique("owner")
    scope = owner_is(owner)
    decoy = api.create("Workflow", config={"owner": owner}, name=unique("decoy"))

    assert listed(api, "Workflow", f"name = {quote(name)}") == []
    assert listed(api, "Workflow", f"{scope} AND name = {quote(name)}") == []

    stored = api.create("Workflow", config={"owner": owner}, name=name)
    assert listed(api, "Workflow", f"{scope} AND name = {quote(name)}") == [stored.id]
    assert sorted(listed(api, "Workflow", scope)) == sorted([decoy.id, stored.id])
    with models.database.connection_context():
        assert models.Workflow.select().where(models.Workflow.config["owner"] == owner).count() == 2


# --------------------------------------------------------------------------- odd input, never an internal error


def test_nul_character_in_a_literal_is_not_an_internal_error(api):
    scope, _ = workflows(api, {})
    try:
        found = listed(api, "Workflow", f'{scope} AND name = "a\x00b"')
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    else:
        assert found == []


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
