"""The kind every generic layer works with: a resource, its relations, and the catalog of them.

A declaration names the model, the message and what is special about the
resource; everything else (parents, output-only and immutable fields, which
fields are required, filterable and orderable) is derived from the model:

    Resource(models.Dataset, pb.Dataset, children=("versions",),
             child_relations=("versions", "training_jobs"))

The declarations themselves live in the domain layer (``server.domain.catalog``);
nothing here names a resource. A ``Catalog`` links its resources to each other,
so that a relation knows the resource it leads to.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from peewee import Field, ForeignKeyField

import models
from server.core.codec import MessageCodec, proto_name, snake_case
from server.core.kinds import OPAQUE, kind_of
from server.core.limits import Limits
from server.core.principal import Role
from server.core.rules import Record, Rule

PACKAGE = "versatil.ml.v1"
OUTPUT_ONLY = frozenset({"id", "created_at", "updated_at", "etag"})
# Stamped from the caller's principal on create, never changed by an update.
STAMPED = "created_by"

@dataclass(frozen=True, eq=False)
class Relation:
    """A hop from one resource to another along a foreign key.

    ``many`` relations go down to children (``Dataset.versions``); the others go
    up to the parent a foreign key names (``DatasetVersion.dataset``).
    """

    name: str
    target: Resource
    key: ForeignKeyField
    many: bool

    def link(self, source: type[models.BaseModel]) -> Any:
        """The condition tying a target row to a ``source`` row, for correlated subqueries."""
        if self.many:
            return self.key == source.id
        return self.target.model.id == self.key


@dataclass(frozen=True)
class StatsFields:
    """What ``Get<R>Stats`` may group by and aggregate (``server.stats``), and from where.

    ``None`` derives the answer from the column types: group by enums, ids,
    strings, integers and timestamps; aggregate numbers with every operation,
    timestamps with COUNT, COUNT_DISTINCT, MIN and MAX, ids, enums and strings
    with COUNT and COUNT_DISTINCT, JSON and embeddings with COUNT.
    """

    # Own fields that may be group keys; a parent's fields follow the parent's declaration.
    group_by: frozenset[str] | None = None
    # Field -> the operations it allows, by short name: ``{"latency": frozenset({"AVG"})}``.
    aggregate: Mapping[str, frozenset[str]] | None = None
    # A faster source than the resource's own table for the plans it can answer exactly: a
    # function of a ``server.stats`` plan returning a source, or None to read the table.
    faster_source: Callable[[Any], Any] | None = None


# What an RPC runs: what it is declared on (its ``Resource``, or the ``Catalog`` for a
# service of no single resource), the request, and the process's limits.
Behavior = Callable[[Any, Message, Limits], Message]


@dataclass(frozen=True)
class Method:
    """An RPC's behavior, and the weakest role that may call it.

    The role is declared here, with the method, so that authorisation reads it
    instead of guessing from the method's name.
    """

    behavior: Behavior
    role: Role


@dataclass(frozen=True, eq=False)
class Resource:
    """One resource: what the generic methods need to know about it."""

    model: type[models.BaseModel]
    message: type[Message]
    # Child relations whose children a create may carry inline (``Dataset.versions``).
    children: tuple[str, ...] = ()
    # The parent foreign key under which ``version`` counts 1, 2, 3, ...
    numbered_by: str | None = None
    # Child lists that ``expand`` may include and filters may reach into
    # (predictions are too many to be either).
    child_relations: tuple[str, ...] = ()
    # Domain rules the standard methods apply on every write (``server.core.rules``).
    rules: tuple[Rule, ...] = ()
    # RPCs beyond the standard methods, by name.
    custom_methods: Mapping[str, Method] = field(default_factory=dict)
    # What Get<R>Stats may group by and aggregate; derived from the column types by default.
    stats: StatsFields = field(default_factory=StatsFields)
    # Set by the Catalog the resource joins: what its relations lead to.
    catalog: Catalog = field(init=False, repr=False)

    @cached_property
    def name(self) -> str:
        return self.message.DESCRIPTOR.name

    @cached_property
    def singular(self) -> str:
        """The request field holding the resource: ``dataset_version``."""
        return snake_case(self.name)

    @cached_property
    def plural(self) -> str:
        """The response field holding a list of resources: ``dataset_versions``."""
        return self.singular + "s"

    @cached_property
    def codec(self) -> MessageCodec:
        return MessageCodec(self.model, self.message)

    @cached_property
    def fields(self) -> dict[str, Field]:
        """Proto field name -> model field, for every column."""
        return {proto_name(f): f for f in self.model._meta.sorted_fields}

    @cached_property
    def parents(self) -> dict[str, ForeignKeyField]:
        """Proto field name -> foreign key, for the parents whose deletion cascades."""
        return {
            name: f
            for name, f in self.fields.items()
            if isinstance(f, ForeignKeyField) and f.on_delete == "CASCADE"
        }

    @cached_property
    def immutable(self) -> frozenset[str]:
        """Fields an update must not name: output-only ones, parents, the version number, created_by."""
        stamped = {STAMPED} & set(self.fields)
        return OUTPUT_ONLY | set(self.parents) | ({"version"} if self.numbered_by else set()) | stamped

    @cached_property
    def writable(self) -> tuple[str, ...]:
        """Columns a client sets on create (parents and an explicit version included)."""
        return tuple(name for name in self.fields if name not in OUTPUT_ONLY)

    @cached_property
    def required(self) -> frozenset[str]:
        """Columns a create must give: NOT NULL and without a default."""
        return frozenset(
            name
            for name in self.writable
            if not self.fields[name].null
            and self.fields[name].default is None
            and not (name == "version" and self.numbered_by)
        )

    @cached_property
    def filterable(self) -> frozenset[str]:
        return frozenset(
            name for name, f in self.fields.items() if kind_of(f) not in OPAQUE
        )

    @cached_property
    def orderable(self) -> frozenset[str]:
        return self.filterable

    @cached_property
    def relations(self) -> dict[str, Relation]:
        """Every parent by its foreign key's name, and the declared child lists."""
        found = {
            f.name: Relation(f.name, self.catalog.of_model(f.rel_model), f, many=False)
            for f in self.fields.values()
            if isinstance(f, ForeignKeyField)
        }
        backrefs = {fk.backref: fk for fk in self.model._meta.backrefs}
        for name in self.child_relations:
            key = backrefs[name]
            found[name] = Relation(name, self.catalog.of_model(key.model), key, many=True)
        return found

    def record(self, data: dict[str, Any]) -> Record:
        """A row's values (``row.__data__`` or a ``dicts()`` row) keyed by column name."""
        return {name: data.get(f.name) for name, f in self.fields.items()}

    def response(self, method: str) -> Message:
        """An empty ``<Method><Resource>sResponse``, e.g. ``ListDatasetsResponse``."""
        name = f"{PACKAGE}.{method}{self.name}sResponse"
        return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))()

    def parent_key_of(self, parent: Resource) -> str:
        """The field of this resource that points at ``parent`` (``dataset_id``)."""
        for name, fk in self.parents.items():
            if fk.rel_model is parent.model:
                return name
        raise LookupError(f"{self.name} has no parent {parent.name}")


class Catalog(Mapping[str, Resource]):
    """Resources by name, each linked to the others through its relations.

    ``services`` are the RPCs of no single resource (``LineageService``): service ->
    method name -> ``Method``, whose behavior gets the catalog.
    """

    def __init__(
        self, resources: Iterable[Resource], services: Mapping[ServiceDescriptor, Mapping[str, Method]] | None = None
    ) -> None:
        self.services = dict(services or {})
        self._by_name = {resource.name: resource for resource in resources}
        self._by_model = {resource.model: resource for resource in self._by_name.values()}
        for resource in self._by_name.values():
            object.__setattr__(resource, "catalog", self)

    def __getitem__(self, name: str) -> Resource:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def of_model(self, model: type[models.BaseModel]) -> Resource:
        return self._by_model[model]
