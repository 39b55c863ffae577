"""The one path every call of the contract takes, from bytes in to a status out.

    handlers = bind_all(catalog, settings.limits, tokens, authenticator)
    server.add_generic_rpc_handlers(handlers)

Each RPC is a ``Method``: a behavior and the weakest role allowed to call it.
The standard methods of every resource have their roles here (``STANDARD``);
custom methods and the services of no single resource declare theirs in the
catalog. A call then goes, in order:

1. decoded leniently, so that bytes that are not a valid message get
   INVALID_ARGUMENT instead of grpcio's INTERNAL;
2. authenticated and authorised (``server.rpc.auth``), unless authentication is off;
3. run as its caller inside one pooled connection, within its deadline and
   with retries of conflicting transactions (``server.rpc.calls``);
4. any failure turned into its ``google.rpc.Status`` (``server.core.errors``);
5. counted (``server.ops.metrics``), its span given its code (``server.ops.tracing``)
   and logged in one line (``server.ops.logs``), whatever happened before.

Handlers are built from the service descriptors rather than the generated
``add_*Servicer_to_server`` functions, so one table serves all 13 services.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from models import database
from server.core import principal
from server.core.errors import InvalidArgument, to_rpc_status, translate
from server.core.limits import Limits
from server.core.principal import Caller, Role
from server.core.resource import Catalog, Method, Resource
from server.methods import standard
from server.ops import logs, metrics, tracing
from server.query.page_tokens import PageTokens
from server.rpc import calls
from server.rpc.auth import Authenticator, authorize
from server.stats.query import get_stats

# The standard methods of every resource: name pattern -> the method, run with the resource.
STANDARD: dict[str, Method] = {
    "Create{}": Method(standard.create, Role.WRITER),
    "Get{}": Method(standard.get, Role.READER),
    "List{}s": Method(standard.list_, Role.READER),  # Bound with the page token signer.
    "Update{}": Method(standard.update, Role.WRITER),
    "Delete{}": Method(standard.delete, Role.ADMIN),
    "BatchCreate{}s": Method(standard.batch_create, Role.WRITER),
    "BatchGet{}s": Method(standard.batch_get, Role.READER),
    "Get{}Stats": Method(get_stats, Role.READER),
}


@dataclass(frozen=True)
class Bound:
    """An RPC ready to run: ``call(request)`` and the weakest role that may make it."""

    call: Callable[[Message], Message]
    role: Role


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


def _bind(method: Method, subject: Any, limits: Limits) -> Bound:
    def call(request: Message) -> Message:
        return method.behavior(subject, request, limits)

    return Bound(call, method.role)


def resource_methods(resource: Resource, limits: Limits, tokens: PageTokens) -> dict[str, Bound]:
    """Every RPC of ``resource``'s service, bound to the resource and the limits."""
    declared = {pattern.format(resource.name): method for pattern, method in STANDARD.items()}
    listing = STANDARD["List{}s"]
    declared[f"List{resource.name}s"] = Method(functools.partial(listing.behavior, tokens=tokens), listing.role)
    declared.update(resource.custom_methods)
    return {name: _bind(method, resource, limits) for name, method in declared.items()}


def service_of(resource: Resource) -> ServiceDescriptor:
    """``resource``'s service; importing its module loads its request messages too."""
    module = importlib.import_module(f"versatil.ml.v1.{resource.singular}_service_pb2")
    return module.DESCRIPTOR.services_by_name[f"{resource.name}Service"]


def services(catalog: Catalog, limits: Limits, tokens: PageTokens) -> dict[ServiceDescriptor, dict[str, Bound]]:
    """Every service of the contract with its bound RPCs."""
    found = {service_of(r): resource_methods(r, limits, tokens) for r in catalog.values()}
    for service, methods in catalog.services.items():
        found[service] = {name: _bind(method, catalog, limits) for name, method in methods.items()}
    return found


class Dispatcher:
    """Builds the handler of each RPC: the one path described above."""

    def __init__(self, authenticator: Authenticator | None) -> None:
        self.authenticator = authenticator

    def bind(self, service: ServiceDescriptor, methods: Mapping[str, Bound]) -> grpc.GenericRpcHandler:
        """A handler for every RPC of ``service``; each must be bound."""
        unbound = [m.name for m in service.methods if m.name not in methods]
        if unbound:
            raise LookupError(f"{service.full_name} declares RPCs with no behavior: {unbound}")
        return grpc.method_handlers_generic_handler(
            service.full_name, {m.name: self._unary(m, methods[m.name]) for m in service.methods}
        )

    def _caller(self, context: grpc.ServicerContext, method: str, role: Role) -> Caller | None:
        if self.authenticator is None:
            return None
        caller = self.authenticator.authenticate(context.invocation_metadata())
        authorize(caller, method, role)
        return caller

    def _unary(self, method: MethodDescriptor, bound: Bound) -> grpc.RpcMethodHandler:
        full_name = f"/{method.containing_service.full_name}/{method.name}"

        def handle(request: Message | MalformedRequest, context: grpc.ServicerContext) -> Message:
            started = time.perf_counter()
            code, caller = grpc.StatusCode.OK, None
            try:
                caller = self._caller(context, full_name, bound.role)
                if isinstance(request, MalformedRequest):
                    raise InvalidArgument(f"the request is not a valid {request.name} message")
                with principal.acting_as(caller) if caller else contextlib.nullcontext():
                    return calls.run(bound.call, request, context)
            except Exception as error:
                failure = translate(error)
                code = failure.code
                if code is grpc.StatusCode.UNAVAILABLE:
                    # The other pooled connections died with this one: reconnect afresh.
                    database.close_idle()
                context.abort_with_status(rpc_status.to_status(to_rpc_status(failure)))
                raise  # abort_with_status always raises; this line only informs type checkers.
            finally:
                seconds = time.perf_counter() - started
                metrics.observe(full_name, code, seconds)
                tracing.record(code)
                logs.rpc(context, full_name, code, seconds, caller.name if caller else "")

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=_lenient(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )


def bind_all(
    catalog: Catalog, limits: Limits, tokens: PageTokens, authenticator: Authenticator | None
) -> list[grpc.GenericRpcHandler]:
    """The handlers of every service of the contract."""
    dispatcher = Dispatcher(authenticator)
    return [dispatcher.bind(service, methods) for service, methods in services(catalog, limits, tokens).items()]
