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
from tests.support import assert_invalid, message, refused, rpc_error, unique
from tests.support.security import SecuredServer, secured_server

Code = grpc.StatusCode


def nested(depth: int) -> str:
    """``NOT (NOT (... name = "x"))``: ``depth`` levels of NOT."""
    return "NOT (" * depth + f'name = "{unique()}"' + ")" * depth


# --------------------------------------------------------------------------------------------
# The defaults
# --------------------------------------------------------------------------------------------


def test_a_batch_of_more_than_1000_is_invalid(api: Any) -> None:
    item = message("CreatePatternRecognitionJobRequest", pattern_recognition_job=api.sample("PatternRecognitionJob"))
    refused(lambda: api.call("PatternRecognitionJob", "BatchCreatePatternRecognitionJobs", requests=[item] * 1001),
            Code.INVALID_ARGUMENT, "1000")
    ids = [str(uuid.uuid4()) for _ in range(1001)]
    refused(lambda: api.call("PatternRecognitionJob", "BatchGetPatternRecognitionJobs", ids=ids),
            Code.INVALID_ARGUMENT, "1000")


def test_a_filter_over_4096_characters_is_invalid(api: Any) -> None:
    at_limit = f'name = "{unique()}"'.ljust(4096)
    assert api.call("Workflow", "ListWorkflows", filter=at_limit).workflows == []
    refused(lambda: api.call("Workflow", "ListWorkflows", filter=at_limit + " "), Code.INVALID_ARGUMENT, "4096")


def test_a_filter_nested_deeper_than_32_is_invalid(api: Any) -> None:
    assert api.call("Workflow", "ListWorkflows", filter=nested(32)).workflows == []
    refused(lambda: api.call("Workflow", "ListWorkflows", filter=nested(33)), Code.INVALID_ARGUMENT, "32")


def test_filter_longer_than_4096_characters_is_invalid(api: Any) -> None:
    def of_length(length: int) -> str:
        return 'name = "' + "a" * (length - 9) + '"'

    assert api.call("Dataset", "ListDatasets", filter=of_length(4096)).datasets == []
    assert_invalid(rpc_error(api.call, "Dataset", "ListDatasets", filter=of_length(4097)), "filter", "4096")
    assert_invalid(rpc_error(api.call, "Dataset", "ListDatasets", filter=of_length(100_000)), "filter", "4096")


def nested_filter(levels: int, how: str) -> str:
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
    api.call("Dataset", "ListDatasets", filter=nested_filter(32, how))
    assert_invalid(rpc_error(api.call, "Dataset", "ListDatasets", filter=nested_filter(33, how)), "filter", "32")
    assert_invalid(rpc_error(api.call, "Dataset", "ListDatasets", filter=nested_filter(100, how)), "filter", "32")


@pytest.mark.parametrize("levels", [33, 1000, 2000])
def test_deep_parentheses_are_not_an_internal_error(api: Any, levels: int) -> None:
    text = "(" * levels + "size = 1" + ")" * levels
    try:
        api.call("Dataset", "ListDatasets", filter=text)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())


def test_a_page_size_over_the_maximum_is_clamped_not_refused(api: Any) -> None:
    assert api.call("Workflow", "ListWorkflows", page_size=1_000_000, filter=f'name = "{unique()}"').workflows == []


def test_a_message_over_4_mib_is_resource_exhausted(api: Any) -> None:
    big = api.sample("Workflow", description="x" * (4 * 1024 * 1024))
    error = rpc_error(lambda: api.call("Workflow", "CreateWorkflow", workflow=big))
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
    refused(lambda: batch(4), Code.INVALID_ARGUMENT)

    page = api.call("PatternRecognitionJob", "ListPatternRecognitionJobs", filter=f'source_uri = "{source}"', page_size=50)
    assert len(page.pattern_recognition_jobs) == 2 and page.next_page_token

    refused(lambda: api.call("Workflow", "ListWorkflows", filter=f'name = "{"y" * 60}"'), Code.INVALID_ARGUMENT)
    refused(lambda: api.call("Workflow", "ListWorkflows", filter=nested(3)), Code.INVALID_ARGUMENT)
    assert api.call("Workflow", "ListWorkflows", filter=nested(2)).workflows == []

    big = api.sample("Workflow", description="x" * (65 * 1024))
    assert rpc_error(lambda: api.call("Workflow", "CreateWorkflow", workflow=big)).code() == Code.RESOURCE_EXHAUSTED


def test_limits_come_from_the_environment() -> None:
    settings = Settings.from_env({"VERSATIL_MAX_BATCH": "10", "VERSATIL_MAX_PAGE_SIZE": "20",
                                  "VERSATIL_MAX_FILTER_LENGTH": "30", "VERSATIL_MAX_FILTER_DEPTH": "4",
                                  "VERSATIL_MAX_MESSAGE_BYTES": "1024"})
    assert (settings.max_batch, settings.max_page_size, settings.max_filter_length, settings.max_filter_depth,
            settings.max_message_bytes) == (10, 20, 30, 4, 1024)
