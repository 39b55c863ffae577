"""Helpers shared by the suites of the domain rules: lifecycles, deployments, lineage, search.

    job = api.create("TrainingJob", status=enum("TrainingJob", "RUNNING"))
    moved = update(api, "TrainingJob", job.id, status=enum("TrainingJob", "SUCCEEDED"))
    error = refused(lambda: update(api, "TrainingJob", job.id, status=enum("TrainingJob", "RUNNING")),
                    grpc.StatusCode.FAILED_PRECONDITION)
    assert_illegal_move(error, "SUCCEEDED", "RUNNING")    # refused is tests.support's
"""
from __future__ import annotations

import datetime
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from server.core.codec import enum_prefix
from tests.support import RESOURCES, error_details, error_info, message


def enum(resource: str, short: str, field: str = "status") -> int:
    """The number of ``short`` (``"RUNNING"``) in the enum of ``resource.field``."""
    descriptor = RESOURCES[resource].message.DESCRIPTOR.fields_by_name[field].enum_type
    return descriptor.values_by_name[enum_prefix(descriptor) + short].number


def short(resource: str, number: int, field: str = "status") -> str:
    descriptor = RESOURCES[resource].message.DESCRIPTOR.fields_by_name[field].enum_type
    return descriptor.values_by_number[number].name[len(enum_prefix(descriptor)) :]


def update(api: Any, resource: str, resource_id: str, **fields: Any) -> Message:
    """Update<R> of exactly ``fields`` (the mask names them)."""
    spec = RESOURCES[resource]
    return api.call(
        resource,
        f"Update{resource}",
        **{spec.singular: message(resource, id=resource_id, **fields)},
        update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
    )


def get(api: Any, resource: str, resource_id: str) -> Message:
    return api.call(resource, f"Get{resource}", id=resource_id)


def assert_illegal_move(error: grpc.RpcError, before: str, after: str) -> None:
    """FAILED_PRECONDITION naming both states, with its reason and the transition as details."""
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
    assert f"from {before} to {after}" in error.details(), error.details()
    assert error_info(error).reason == "ILLEGAL_STATE_TRANSITION"
    failures = error_details(error, error_details_pb2.PreconditionFailure)
    assert failures and failures[0].violations[0].description == f"{before} -> {after}"


def moment(message_field: Any) -> datetime.datetime:
    return message_field.ToDatetime(tzinfo=datetime.timezone.utc)


def recent(message_field: Any, seconds: float = 60) -> bool:
    """A timestamp set by the service during this test."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(seconds=seconds) <= moment(message_field) <= now
