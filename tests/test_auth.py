"""Authentication and roles: bearer tokens from the tokens file, reader < writer < admin.

Each test talks to an in-process server on the session database whose tokens
``python -m server.tokens add`` made; the embedded default runs as a child process.
"""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.config import Settings
from server.core.principal import Role
from server.query.page_tokens import PageTokens
from server.rpc import auth, tokens
from server.rpc.dispatch import services
from tests.support import ADMIN_TOKEN, RESOURCES, ROOT, error_info, message, refused, unique
from tests.support.ops import ServerProcess, run_module, stop_embedded
from tests.support.security import SecuredServer, add_token, secured_server
from versatil.ml.v1 import common_pb2, lineage_service_pb2, lineage_service_pb2_grpc

Code = grpc.StatusCode
ROLES = {"rita": "reader", "walt": "writer", "ada": "admin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[SecuredServer]:
    with secured_server(tmp_path_factory.mktemp("auth"), ROLES) as running:
        yield running


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return Code.OK


# --------------------------------------------------------------------------------------------
# The tokens file
# --------------------------------------------------------------------------------------------


def test_the_tokens_file_holds_salted_hashes_never_a_token(server: SecuredServer) -> None:
    text = server.tokens_file.read_text()
    assert all(token not in text for token in server.tokens.values())
    entries = json.loads(text)["tokens"]
    assert [(e["principal"], e["roles"]) for e in entries] == [(p, [r]) for p, r in ROLES.items()]
    for entry in entries:
        token = server.tokens[entry["principal"]]
        assert entry["sha256"] == tokens.digest(entry["salt"], token)
        assert len(entry["salt"]) >= 32 and len(token) >= 40
    assert len({e["salt"] for e in entries}) == len(entries)
    assert stat.S_IMODE(server.tokens_file.stat().st_mode) == 0o600


def test_tokens_list_and_remove(tmp_path: Path) -> None:
    file = tmp_path / "t.json"
    add_token(file, "ci", "writer")
    add_token(file, "ci", "reader")
    run = lambda *args: subprocess.run([sys.executable, "-m", "server.tokens", "--file", str(file), *args],  # noqa: E731
                                       cwd=ROOT, capture_output=True, text=True)
    assert run("list").stdout.splitlines() == ["ci writer", "ci reader"]
    assert run("remove", "--principal", "ci").returncode == 0
    assert json.loads(file.read_text()) == {"tokens": []}
    bad = run("add", "--principal", "x", "--role", "owner")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


def test_a_call_without_a_token_is_unauthenticated(server: SecuredServer) -> None:
    api = server.api()
    error = refused(lambda: api.call("Workflow", "ListWorkflows"), Code.UNAUTHENTICATED, "Bearer")
    assert error_info(error).reason == "MISSING_CREDENTIALS"


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "Token abc"],
)
def test_a_bad_token_is_unauthenticated(server: SecuredServer, header: str) -> None:
    channel = server.channel()
    stub = channel.unary_unary("/versatil.ml.v1.WorkflowService/ListWorkflows",
                               request_serializer=lambda m: m.SerializeToString())
    error = refused(lambda: stub(message("ListWorkflowsRequest"), metadata=[("authorization", header)]),
                    Code.UNAUTHENTICATED)
    assert error_info(error).reason == "INVALID_CREDENTIALS"


def test_the_scheme_is_case_insensitive(server: SecuredServer) -> None:
    stub = server.channel().unary_unary("/versatil.ml.v1.WorkflowService/ListWorkflows",
                                        request_serializer=lambda m: m.SerializeToString())
    for scheme in ("bearer", "BEARER", "BeArEr"):
        stub(message("ListWorkflowsRequest", page_size=1), metadata=[("authorization", f"{scheme} {server.tokens['rita']}")])


def test_a_token_of_another_server_is_unauthenticated(server: SecuredServer) -> None:
    """The session server's dev token means nothing to a server that was not given it."""
    refused(lambda: server.api(token=ADMIN_TOKEN).call("Workflow", "ListWorkflows"), Code.UNAUTHENTICATED)


def test_health_and_reflection_need_no_token(server: SecuredServer) -> None:
    channel = server.channel()
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))))
    assert "versatil.ml.v1.WorkflowService" in {s.name for s in answer.list_services_response.service}


def test_a_token_added_while_serving_works_and_a_removed_one_stops(server: SecuredServer) -> None:
    name = unique("late")
    token = add_token(server.tokens_file, name, "reader")
    deadline = time.monotonic() + 10
    while code_of(lambda: server.api(token=token).call("Workflow", "ListWorkflows", page_size=1)) != Code.OK:
        assert time.monotonic() < deadline, "the new token was never accepted"
        time.sleep(0.2)
    tokens.remove(server.tokens_file, name)
    while code_of(lambda: server.api(token=token).call("Workflow", "ListWorkflows", page_size=1)) != Code.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "the removed token was still accepted"
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------


WRITE_RPCS = {"CancelTrainingJob", "DeployModelVersion", "UndeployModelVersion", "RollbackCloudRunService"}


def test_every_rpc_of_every_service_declares_the_role_the_contract_gives_it() -> None:
    contract = services(RESOURCES, Settings().limits, PageTokens(b"key"))
    seen = {}
    for service, bound in contract.items():
        assert set(bound) == {method.name for method in service.methods}, service.full_name
        seen.update({name: method.role for name, method in bound.items()})
    for name, role in seen.items():
        if name.startswith(("Get", "List", "BatchGet", "Search")):
            assert role is Role.READER, name
        elif name.startswith(("Create", "Update", "BatchCreate")) or name in WRITE_RPCS:
            assert role is Role.WRITER, name
        else:
            assert role is Role.ADMIN, name
    assert {n for n, r in seen.items() if r is Role.ADMIN} == {f"Delete{r}" for r in RESOURCES}
    assert {"GetWorkflowStats", "SearchPredictions", "BatchGetModels", "GetLineage"} <= {
        n for n, r in seen.items() if r is Role.READER
    }
    assert WRITE_RPCS <= set(seen)


def test_a_reader_reads_and_may_not_write(server: SecuredServer) -> None:
    admin, reader = server.api("ada"), server.api("rita")
    workflow = admin.create("Workflow")
    job = admin.create("TrainingJob")
    assert reader.call("Workflow", "GetWorkflow", id=workflow.id) == workflow
    reader.call("Workflow", "ListWorkflows", page_size=1)
    reader.call("Workflow", "BatchGetWorkflows", ids=[workflow.id])
    reader.stub("Workflow").GetWorkflowStats(common_pb2.StatsRequest())
    reader.call("Workflow", "SearchWorkflows", embedding=[0.5] * 384, top_k=1)
    lineage_service_pb2_grpc.LineageServiceStub(reader.channel).GetLineage(
        lineage_service_pb2.GetLineageRequest(resource_type="TrainingJob", id=job.id))

    error = refused(lambda: reader.create("Workflow"), Code.PERMISSION_DENIED)
    info = error_info(error)
    assert info.reason == "ROLE_NOT_ALLOWED"
    assert dict(info.metadata) == {"principal": "rita", "role": "reader", "required_role": "writer"}
    refused(lambda: reader.call("Workflow", "UpdateWorkflow", workflow=workflow), Code.PERMISSION_DENIED)
    refused(lambda: reader.call("Workflow", "BatchCreateWorkflows", requests=[]), Code.PERMISSION_DENIED)
    refused(lambda: reader.call("TrainingJob", "CancelTrainingJob", id=job.id), Code.PERMISSION_DENIED)
    refused(lambda: reader.call("Workflow", "DeleteWorkflow", id=workflow.id), Code.PERMISSION_DENIED)


def test_a_writer_writes_and_may_not_delete(server: SecuredServer) -> None:
    writer = server.api("walt")
    workflow = writer.create("Workflow")
    updated = writer.call("Workflow", "UpdateWorkflow", workflow=message("Workflow", id=workflow.id, description="d"))
    assert updated.description == "d"
    job = writer.create("TrainingJob")
    assert writer.call("TrainingJob", "CancelTrainingJob", id=job.id).status == message("TrainingJob", status="TRAINING_JOB_STATUS_CANCELLED").status
    error = refused(lambda: writer.call("Workflow", "DeleteWorkflow", id=workflow.id), Code.PERMISSION_DENIED)
    assert error_info(error).metadata["required_role"] == "admin"
    assert writer.call("Workflow", "GetWorkflow", id=workflow.id).id == workflow.id


def test_an_admin_deletes(server: SecuredServer) -> None:
    admin = server.api("ada")
    workflow = admin.create("Workflow")
    admin.call("Workflow", "DeleteWorkflow", id=workflow.id)
    refused(lambda: admin.call("Workflow", "GetWorkflow", id=workflow.id), Code.NOT_FOUND)


def test_refused_calls_write_nothing(server: SecuredServer, rows) -> None:
    name = unique("refused")
    refused(lambda: server.api("rita").create("PatternRecognitionJob", name=name), Code.PERMISSION_DENIED)
    refused(lambda: server.api().create("PatternRecognitionJob", name=name), Code.UNAUTHENTICATED)
    assert rows.PatternRecognitionJob.select().where(rows.PatternRecognitionJob.name == name).count() == 0


# --------------------------------------------------------------------------------------------
# created_by is the caller's principal
# --------------------------------------------------------------------------------------------

STAMPED = ["Workflow", "Experiment", "Prediction", "PatternRecognitionJob", "CloudRunService"]


@pytest.mark.parametrize("resource", STAMPED)
def test_created_by_is_stamped_from_the_principal(server: SecuredServer, resource: str) -> None:
    walt = server.api("walt")
    created = walt.create(resource, created_by="mallory")
    assert created.created_by == "walt"
    fetched = server.api("ada").call(resource, f"Get{resource}", id=created.id)
    assert fetched.created_by == "walt"
    batch = walt.call(resource, f"BatchCreate{resource}s", requests=[
        message(f"Create{resource}Request", **{RESOURCES[resource].singular: walt.sample(resource, created_by="eve")})])
    assert getattr(batch, RESOURCES[resource].plural)[0].created_by == "walt"


@pytest.mark.parametrize("resource", STAMPED)
def test_naming_created_by_in_an_update_mask_is_invalid(server: SecuredServer, resource: str) -> None:
    admin = server.api("ada")
    created = admin.create(resource)
    changed = message(resource, id=created.id, created_by="mallory")
    error = refused(lambda: admin.call(resource, f"Update{resource}", **{RESOURCES[resource].singular: changed},
                                       update_mask={"paths": ["created_by"]}), Code.INVALID_ARGUMENT)
    assert "created_by" in error.details()
    # Without a mask, a created_by sent along is not among the fields an update may change.
    kept = admin.call(resource, f"Update{resource}", **{RESOURCES[resource].singular: changed})
    assert kept.created_by == created.created_by


def test_an_admin_cannot_record_on_behalf_of_another_principal(server: SecuredServer) -> None:
    admin = server.api("ada")
    created = admin.create("Prediction", created_by="walt")
    assert created.created_by == "ada"
    assert admin.call("Prediction", "GetPrediction", id=created.id).created_by == "ada"
    batch = admin.call("Prediction", "BatchCreatePredictions", requests=[
        message("CreatePredictionRequest", prediction=admin.sample("Prediction", created_by="walt"))])
    assert batch.predictions[0].created_by == "ada"
    assert admin.create("Workflow", created_by="").created_by == "ada"
    assert admin.create("Experiment").created_by == "ada"


def test_upsert_stamps_too(server: SecuredServer) -> None:
    walt = server.api("walt")
    sample = walt.sample("PatternRecognitionJob", created_by="mallory", id=str(uuid.uuid4()))
    made = walt.call("PatternRecognitionJob", "UpdatePatternRecognitionJob", pattern_recognition_job=sample,
                     allow_missing=True)
    assert made.created_by == "walt"


# --------------------------------------------------------------------------------------------
# Configurations of python -m server
# --------------------------------------------------------------------------------------------

SERVER_ENV = {"VERSATIL_LISTEN": "127.0.0.1:0", "VERSATIL_METRICS_LISTEN": "off", "VERSATIL_WORKERS": "1"}


@pytest.mark.slow
def test_a_shared_database_without_tokens_refuses_to_start(database_url: str) -> None:
    result = run_module("server", {"DATABASE_URL": database_url, "VERSATIL_DEV_TOKEN": "", "VERSATIL_TOKENS_FILE": "",
                                   **SERVER_ENV})
    assert result.returncode != 0
    assert "VERSATIL_TOKENS_FILE" in result.stderr and "python -m server.tokens add" in result.stderr


@pytest.mark.slow
def test_the_embedded_default_prints_a_generated_admin_dev_token(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "", "VERSATIL_DATA_DIR": str(tmp_path), "VERSATIL_DEV_TOKEN": "", "VERSATIL_TOKENS_FILE": "",
           **SERVER_ENV}
    try:
        with ServerProcess(env) as server:
            token = server.wait_for(r"admin dev token for this run: (\S+)")[1]
            running = SecuredServer(server.port, tmp_path / "none")
            try:
                refused(lambda: running.api().call("Workflow", "ListWorkflows"), Code.UNAUTHENTICATED)
                created = running.api(token=token).create("Workflow", created_by="")
                assert created.created_by == auth.DEV_PRINCIPAL
                refused(lambda: running.api(token=token + "x").call("Workflow", "ListWorkflows"), Code.UNAUTHENTICATED)
            finally:
                for channel in running.channels:
                    channel.close()
    finally:
        stop_embedded(tmp_path)
