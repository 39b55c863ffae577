"""Binds the RPCs of every resource service to the generic methods.

Handlers are built from the service descriptors rather than the generated
``add_*Servicer_to_server`` functions for two reasons: one table serves all 13
services, and requests are decoded by a lenient deserializer, so that bytes
that are not a valid message get INVALID_ARGUMENT instead of grpcio's INTERNAL.
Each call runs in one pooled database connection; when it ends it is counted
(``server.metrics``), its span gets its status (``server.tracing``) and it logs
one line (``server.logs``).
"""
from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf import message_factory
from grpc_status import rpc_status

from models import database
from server import calls, logs, methods, metrics, tracing
from server.errors import InvalidArgument, to_rpc_status
from server.pagination import PageTokens
from server.resources import RESOURCES, Resource

Behavior = Callable[[Message], Message]
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class MalformedRequest:
    """Stands for a request whose bytes did not decode as the expected message."""

    def __init__(self, name: str) -> None:
        self.name = name


def _lenient(message_class: type[Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return MalformedRequest(message_class.DESCRIPTOR.full_name)

    return deserialize


def _standard_methods(resource: Resource, tokens: PageTokens) -> dict[str, Behavior]:
    name = resource.name
    bound = {
        f"Create{name}": methods.create,
        f"Get{name}": methods.get,
        f"List{name}s": functools.partial(methods.list_, tokens=tokens),
        f"Update{name}": methods.update,
        f"Delete{name}": methods.delete,
        f"BatchCreate{name}s": methods.batch_create,
        f"BatchGet{name}s": methods.batch_get,
        **resource.custom_methods,
    }
    return {method: functools.partial(behavior, resource) for method, behavior in bound.items()}


def _unary(method: MethodDescriptor, behavior: Behavior) -> grpc.RpcMethodHandler:
    full_name = f"/{method.containing_service.full_name}/{method.name}"
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)

    def handle(request: Message | MalformedRequest, context: grpc.ServicerContext) -> Message:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidArgument(f"the request is not a valid {request.name} message")
            return calls.run(behavior, request, context)
        except Exception as error:
            status = to_rpc_status(error)
            code = _CODES[status.code]
            if code is grpc.StatusCode.UNAVAILABLE:
                # The other pooled connections died with this one: reconnect afresh.
                database.close_idle()
            context.abort_with_status(rpc_status.to_status(status))
            raise  # abort_with_status always raises; this line only informs type checkers.
        finally:
            seconds = time.perf_counter() - started
            metrics.observe(full_name, code, seconds)
            tracing.record(code)
            logs.rpc(context, full_name, code, seconds)

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=_lenient(request_class),
        response_serializer=response_class.SerializeToString,
    )


def bind(service: ServiceDescriptor, behaviors: Mapping[str, Behavior]) -> grpc.GenericRpcHandler:
    """A handler for every RPC of ``service``; each must have a behavior."""
    unbound = [m.name for m in service.methods if m.name not in behaviors]
    if unbound:
        raise LookupError(f"{service.full_name} declares RPCs with no behavior: {unbound}")
    return grpc.method_handlers_generic_handler(
        service.full_name, {m.name: _unary(m, behaviors[m.name]) for m in service.methods}
    )


def service_descriptor(resource: Resource) -> ServiceDescriptor:
    module = importlib.import_module(f"versatil.ml.v1.{resource.singular}_service_pb2")
    return module.DESCRIPTOR.services_by_name[f"{resource.name}Service"]


def resource_services(tokens: PageTokens) -> dict[ServiceDescriptor, dict[str, Behavior]]:
    """Every resource service with the behaviors of its RPCs."""
    return {
        service_descriptor(resource): _standard_methods(resource, tokens) for resource in RESOURCES.values()
    }
