"""The List filter language, first form (AIP-160): ``field = value`` joined by ``AND``.

Each literal is typed by the field it is compared with. Tests scope their
lists to rows they made themselves (a unique value of their own, such as a
``config.owner`` key, or a fresh parent id), so rows of other tests never match.
``created_by`` is no such value: the server stamps it with the caller's principal,
the same for every test of the session.
"""
from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

import models
from conftest import bad_request_fields, unique
from tests.security_support import SecuredServer, secured_server

# --------------------------------------------------------------------------- helpers

UTC = datetime.timezone.utc


def rpc_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def listed(api: Any, resource: str, filter_text: str, **fields: Any) -> list[str]:
    """Ids of every row matching ``filter_text`` (all pages)."""
    plural = f"{resource[0].lower()}{re.sub(r'(?=[A-Z])', '_', resource[1:]).lower()}s"
    found, token = [], ""
    while True:
        response = api.call(resource, f"List{resource}s", filter=filter_text, page_size=1000, page_token=token, **fields)
        found += [item.id for item in getattr(response, plural)]
        token = response.next_page_token
        if not token:
            return found


def invalid_filter(api: Any, resource: str, filter_text: str) -> str:
    """The message of the INVALID_ARGUMENT a bad filter gets; checks its BadRequest."""
    error = rpc_error(api.call, resource, f"List{resource}s", filter=filter_text)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    fields = bad_request_fields(error)
    assert "filter" in fields, fields
    return error.details()


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


def test_nul_character_in_a_literal_is_not_an_internal_error(api):
    scope, _ = workflows(api, {})
    try:
        found = listed(api, "Workflow", f'{scope} AND name = "a\x00b"')
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    else:
        assert found == []
