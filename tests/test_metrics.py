"""Prometheus metrics: RPCs by method and code, latency, the pool, database errors; scraped over HTTP."""
from __future__ import annotations

import socket
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import models
from server.ops import metrics
from tests.support import Api, message, refused, rpc_error
from tests.support.ops import ServerProcess, migrate, scratch_database, unreachable

WORKFLOWS = {"grpc_type": "unary", "grpc_service": "versatil.ml.v1.WorkflowService"}


def scrape(address: str) -> dict[tuple[str, frozenset], float]:
    """Every sample at ``http://address/metrics``, keyed by name and labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """The in-process server's metrics, on a port the OS picked."""
    served = metrics.serve("127.0.0.1:0")
    assert served is not None
    server, address = served
    yield address
    server.shutdown()


def test_rpcs_are_counted_by_method_and_code_and_timed(api: Api, exporter: str) -> None:
    before = scrape(exporter)
    workflow = api.create("Workflow")
    refused(lambda: api.call("Workflow", "GetWorkflow", id="not-a-uuid"), grpc.StatusCode.INVALID_ARGUMENT)
    stale = message("Workflow", id=workflow.id, description="x", etag="stale")
    refused(lambda: api.call("Workflow", "UpdateWorkflow", workflow=stale, update_mask={"paths": ["description"]}),
            grpc.StatusCode.ABORTED)
    after = scrape(exporter)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("grpc_server_handled_total", **WORKFLOWS, grpc_method="CreateWorkflow", grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **WORKFLOWS, grpc_method="GetWorkflow", grpc_code="INVALID_ARGUMENT") == 1
    assert delta("grpc_server_handled_total", **WORKFLOWS, grpc_method="UpdateWorkflow", grpc_code="ABORTED") == 1
    assert delta("grpc_server_handling_seconds_count", **WORKFLOWS, grpc_method="CreateWorkflow") == 1
    assert delta("grpc_server_handling_seconds_sum", **WORKFLOWS, grpc_method="CreateWorkflow") > 0
    assert delta("grpc_server_handling_seconds_bucket", **WORKFLOWS, grpc_method="CreateWorkflow", le="+Inf") == 1
    # A stale etag is a database conflict; a malformed id is the caller's mistake.
    assert delta("versatil_db_errors_total", code="ABORTED") == 1
    assert delta("versatil_db_errors_total", code="INVALID_ARGUMENT") == 0


def test_pool_gauges_are_read_at_scrape_time(api: Api, exporter: str) -> None:
    api.create("Workflow")  # The pool has opened at least one connection.
    idle = scrape(exporter)
    assert value(idle, "versatil_db_pool_max_connections") == 8  # The session's pool size.
    in_use_before = value(idle, "versatil_db_pool_connections", state="in_use")
    idle_before = value(idle, "versatil_db_pool_connections", state="idle")
    assert idle_before >= 1

    with models.database.connection_context():
        busy = scrape(exporter)
    assert value(busy, "versatil_db_pool_connections", state="in_use") == in_use_before + 1
    assert value(busy, "versatil_db_pool_connections", state="idle") == idle_before - 1

    after = scrape(exporter)
    assert value(after, "versatil_db_pool_connections", state="in_use") == in_use_before
    assert value(after, "versatil_db_pool_connections", state="idle") == idle_before


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_the_server_serves_metrics_and_counts_an_unreachable_database(database_url: str, workers: int) -> None:
    """One process, or several workers whose samples the parent sums on one port."""
    calls = 12  # Each on its own connection, so that the kernel spreads them over the workers.
    with scratch_database(database_url) as url:
        migrate(url)
        env = {"DATABASE_URL": url, "VERSATIL_METRICS_LISTEN": "127.0.0.1:0", "VERSATIL_POOL_SIZE": "3",
               "VERSATIL_WORKERS": str(workers)}
        with ServerProcess(env) as server:
            address = server.wait_for(r"metrics on http://([\d.]+:\d+)/metrics")[1]
            request = message("GetWorkflowRequest", id=str(uuid.uuid4()))

            def get(**kwargs) -> None:
                with server.channel() as channel:
                    channel.unary_unary("/versatil.ml.v1.WorkflowService/GetWorkflow",
                                        request_serializer=lambda m: m.SerializeToString())(request, **kwargs)

            for _ in range(calls):
                rpc_error(get)
            samples = scrape(address)
            assert value(samples, "grpc_server_handled_total", **WORKFLOWS,
                         grpc_method="GetWorkflow", grpc_code="NOT_FOUND") == calls
            assert value(samples, "grpc_server_handling_seconds_count", **WORKFLOWS, grpc_method="GetWorkflow") == calls
            assert value(samples, "versatil_db_pool_max_connections") == 3 * workers
            assert value(samples, "versatil_db_pool_connections", state="idle") >= 1
            # Present at 0 before any error, so that a rate() or an alert sees the first one.
            assert samples[("versatil_db_errors_total", frozenset({("code", "UNAVAILABLE")}))] == 0
            assert not [name for name, _ in samples if name.endswith("_created")]

            with unreachable(database_url, url):
                assert rpc_error(get, timeout=30).code() == grpc.StatusCode.UNAVAILABLE
                samples = scrape(address)
            assert value(samples, "versatil_db_errors_total", code="UNAVAILABLE") == 1
            assert value(samples, "grpc_server_handled_total", **WORKFLOWS,
                         grpc_method="GetWorkflow", grpc_code="UNAVAILABLE") == 1


def test_off_and_a_busy_port_leave_the_service_without_metrics(caplog: pytest.LogCaptureFixture) -> None:
    assert metrics.serve("off") is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.serve(f"127.0.0.1:{port}") is None
    assert "metrics are off: cannot listen on" in caplog.text
