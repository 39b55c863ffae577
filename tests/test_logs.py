"""One structured log line per RPC, JSON unless a person is reading, and the request id round trip."""
from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import time
import uuid

import grpc
import pytest

from server.ops import logs
from tests.support import Api, bad_request_fields, message, refused, rpc_error
from tests.support.ops import ServerProcess

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _trailing(call_or_error) -> dict[str, str]:
    return dict(call_or_error.trailing_metadata())


def test_request_id_is_echoed_or_generated(api: Api) -> None:
    get = api.stub("Workflow").GetWorkflow
    workflow = api.create("Workflow")

    _, call = get.with_call(message("GetWorkflowRequest", id=workflow.id), metadata=[("x-request-id", "req-42")])
    assert _trailing(call)["x-request-id"] == "req-42"

    _, call = get.with_call(message("GetWorkflowRequest", id=workflow.id))
    assert UUID.fullmatch(_trailing(call)["x-request-id"])

    # A value that could forge log fields is replaced, not echoed.
    _, call = get.with_call(message("GetWorkflowRequest", id=workflow.id), metadata=[("x-request-id", "a b=c")])
    assert UUID.fullmatch(_trailing(call)["x-request-id"])


def test_a_failed_call_keeps_its_status_details_beside_the_request_id(api: Api) -> None:
    failed = refused(lambda: api.stub("Dataset").GetDataset(message("GetDatasetRequest", id="not-a-uuid"),
                                                            metadata=[("x-request-id", "req-bad")]),
                     grpc.StatusCode.INVALID_ARGUMENT)
    assert _trailing(failed)["x-request-id"] == "req-bad"
    assert bad_request_fields(failed) == ["id"]


def test_a_line_names_the_principal_and_the_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logs.log.addHandler(handler)
    level = logs.log.level
    logs.log.setLevel(logging.INFO)
    try:
        logs.log_call("/versatil.ml.v1.ModelService/GetModel", grpc.StatusCode.OK, 0.0042, "alice", "req-7")
    finally:
        logs.log.removeHandler(handler)
        logs.log.setLevel(level)
    line = json.loads(stream.getvalue())
    assert line["principal"] == "alice"
    assert line["request_id"] == "req-7" and line["duration_ms"] == 4.2 and line["code"] == "OK"


def _json_lines(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
def test_every_line_is_json_when_stderr_is_not_a_terminal(database_url: str) -> None:
    with ServerProcess({"DATABASE_URL": database_url}) as server, server.channel() as channel:
        stub = channel.unary_unary("/versatil.ml.v1.WorkflowService/GetWorkflow",
                                   request_serializer=lambda m: m.SerializeToString())
        rpc_error(stub, message("GetWorkflowRequest", id=str(uuid.uuid4())), metadata=[("x-request-id", "req-json")])
        server.wait_for(r'"request_id": "req-json"')
    entries = _json_lines(server.stderr_lines)  # Every line parses, the start-up ones included.
    rpc = next(entry for entry in entries if entry.get("request_id") == "req-json")
    assert rpc["method"] == "/versatil.ml.v1.WorkflowService/GetWorkflow"
    assert rpc["code"] == "NOT_FOUND"
    assert isinstance(rpc["duration_ms"], float) and rpc["duration_ms"] > 0
    assert rpc["principal"] == "dev"  # The admin of VERSATIL_DEV_TOKEN (server.auth).
    assert rpc["logger"] == "versatil.rpc" and rpc["level"] == "INFO" and rpc["time"].endswith("Z")
    assert any("serving on" in entry["message"] for entry in entries)


@pytest.mark.slow
def test_text_when_forced(database_url: str) -> None:
    with ServerProcess({"DATABASE_URL": database_url, "VERSATIL_LOG_FORMAT": "text"}) as server, \
            server.channel() as channel:
        stub = channel.unary_unary("/versatil.ml.v1.WorkflowService/GetWorkflow",
                                   request_serializer=lambda m: m.SerializeToString())
        rpc_error(stub, message("GetWorkflowRequest", id="x"), metadata=[("x-request-id", "req-text")])
        line = server.wait_for(r".*request_id=req-text.*")[0]
    assert re.search(r" INFO versatil\.rpc /versatil\.ml\.v1\.WorkflowService/GetWorkflow INVALID_ARGUMENT "
                     r"\d+\.\dms principal=dev request_id=req-text$", line), line


@pytest.mark.slow
def test_text_on_a_terminal(database_url: str) -> None:
    """``auto`` (the default) writes for people when stderr is a terminal."""
    leader, follower = pty.openpty()
    try:
        with ServerProcess({"DATABASE_URL": database_url}, stderr=follower):
            os.close(follower)
            follower = -1
            seen = ""
            deadline = time.monotonic() + 60
            while not re.search(r"serving on.*\n", seen) and time.monotonic() < deadline:
                seen += os.read(leader, 4096).decode(errors="replace")
            assert "serving on" in seen, seen
            line = next(line for line in seen.splitlines() if "serving on" in line)
            assert not line.lstrip().startswith("{")
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO versatil serving on", line), line
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="VERSATIL_LOG_FORMAT"):
        logs.formatter("yaml")
