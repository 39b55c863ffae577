"""Request limits: batch sizes, filter length and depth, page sizes and message sizes.

The defaults are checked on the session server; a server made with smaller
limits shows that each one is configurable (``server.limits``).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from server.config import Settings
from tests.conftest import message, unique
from tests.security_support import SecuredServer, secured_server

Code = grpc.StatusCode


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def nested(depth: int) -> str:
    """``NOT (NOT (... name = "x"))``: ``depth`` levels of NOT."""
    return "NOT (" * depth + f'name = "{unique()}"' + ")" * depth


# --------------------------------------------------------------------------------------------
# The defaults
# --------------------------------------------------------------------------------------------


def test_a_batch_of_more_than_1000_is_invalid(api: Any) -> None:
    item = message("CreatePatternRecognitionJobRequest", pattern_recognition_job=api.sample("PatternRecognitionJob"))
    error = error_of(lambda: api.call("PatternRecognitionJob", "BatchCreatePatternRecognitionJobs", requests=[item] * 1001))
    assert error.code() == Code.INVALID_ARGUMENT and "1000" in error.details()
    ids = [str(uuid.uuid4()) for _ in range(1001)]
    error = error_of(lambda: api.call("PatternRecognitionJob", "BatchGetPatternRecognitionJobs", ids=ids))
    assert error.code() == Code.INVALID_ARGUMENT and "1000" in error.details()


def test_a_filter_over_4096_characters_is_invalid(api: Any) -> None:
    at_limit = f'name = "{unique()}"'.ljust(4096)
    assert api.call("Workflow", "ListWorkflows", filter=at_limit).workflows == []
    error = error_of(lambda: api.call("Workflow", "ListWorkflows", filter=at_limit + " "))
    assert error.code() == Code.INVALID_ARGUMENT and "4096" in error.details()


def test_a_filter_nested_deeper_than_32_is_invalid(api: Any) -> None:
    assert api.call("Workflow", "ListWorkflows", filter=nested(32)) is not None
    error = error_of(lambda: api.call("Workflow", "ListWorkflows", filter=nested(33)))
    assert error.code() == Code.INVALID_ARGUMENT and "32" in error.details()


def test_a_page_size_over_the_maximum_is_clamped_not_refused(api: Any) -> None:
    assert api.call("Workflow", "ListWorkflows", page_size=1_000_000, filter=f'name = "{unique()}"').workflows == []


def test_a_message_over_4_mib_is_resource_exhausted(api: Any) -> None:
    big = api.sample("Workflow", description="x" * (4 * 1024 * 1024))
    error = error_of(lambda: api.call("Workflow", "CreateWorkflow", workflow=big))
    assert error.code() == Code.RESOURCE_EXHAUSTED
    fits = api.sample("Workflow", description="x" * (4 * 1024 * 1024 - 4096))
    assert len(api.call("Workflow", "CreateWorkflow", workflow=fits).description) == len(fits.description)


# --------------------------------------------------------------------------------------------
# Configured limits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[SecuredServer]:
    limits = {"max_batch": 3, "max_page_size": 2, "max_filter_length": 60, "max_filter_depth": 2,
              "max_message_bytes": 64 * 1024}
    with secured_server(tmp_path_factory.mktemp("limits"), {"ada": "admin"}, **limits) as running:
        yield running


def test_every_limit_is_configurable(small: SecuredServer) -> None:
    api = small.api("ada")
    source = unique("gs://lim/")
    items = [message("CreatePatternRecognitionJobRequest",
                     pattern_recognition_job=api.sample("PatternRecognitionJob", source_uri=source)) for _ in range(4)]
    batch = lambda n: api.call("PatternRecognitionJob", "BatchCreatePatternRecognitionJobs", requests=items[:n])  # noqa: E731
    assert len(batch(3).pattern_recognition_jobs) == 3
    assert error_of(lambda: batch(4)).code() == Code.INVALID_ARGUMENT

    page = api.call("PatternRecognitionJob", "ListPatternRecognitionJobs", filter=f'source_uri = "{source}"', page_size=50)
    assert len(page.pattern_recognition_jobs) == 2 and page.next_page_token

    assert error_of(lambda: api.call("Workflow", "ListWorkflows", filter=f'name = "{"y" * 60}"')).code() == Code.INVALID_ARGUMENT
    assert error_of(lambda: api.call("Workflow", "ListWorkflows", filter=nested(3))).code() == Code.INVALID_ARGUMENT
    assert api.call("Workflow", "ListWorkflows", filter=nested(2)) is not None

    big = api.sample("Workflow", description="x" * (65 * 1024))
    assert error_of(lambda: api.call("Workflow", "CreateWorkflow", workflow=big)).code() == Code.RESOURCE_EXHAUSTED


def test_limits_come_from_the_environment() -> None:
    settings = Settings.from_env({"VERSATIL_MAX_BATCH": "10", "VERSATIL_MAX_PAGE_SIZE": "20",
                                  "VERSATIL_MAX_FILTER_LENGTH": "30", "VERSATIL_MAX_FILTER_DEPTH": "4",
                                  "VERSATIL_MAX_MESSAGE_BYTES": "1024"})
    assert (settings.max_batch, settings.max_page_size, settings.max_filter_length, settings.max_filter_depth,
            settings.max_message_bytes) == (10, 20, 30, 4, 1024)
