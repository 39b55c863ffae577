"""The 13 resources, each declared once; the generic layer serves them all.

A declaration names the model, the message and what is special about the
resource; everything else (parents, output-only and immutable fields, which
fields are required, filterable and orderable) is derived from the model:

    Resource(models.Dataset, pb.Dataset, children={"versions": "DatasetVersion"})

Adding a resource means a message, a model and one line here.

Domain rules (``rules``: lifecycles in ``server.lifecycle``, the traffic invariant in
``server.deployments``) and RPCs beyond the standard ones (``custom_methods``: vector
search, cancelling, deploying, rolling back) are declared here too.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from peewee import Field, ForeignKeyField
from pgvector.peewee import VectorField
from playhouse.postgres_ext import BinaryJSONField

import models
from server import deployments, lifecycle, search
from server.convert import MessageCodec, proto_name, snake_case
from server.encryption import EncryptsSecrets
from server.principal import StampsCreator
from server.rules import Record, Rule
from versatil.ml.v1 import resources_pb2 as pb

PACKAGE = "versatil.ml.v1"
OUTPUT_ONLY = frozenset({"id", "created_at", "updated_at", "etag"})
# Stamped from the caller's principal on create, never changed by an update.
STAMPED = "created_by"
# Resource -> the JSON column whose ``secrets`` values are encrypted at rest.
SECRET_COLUMNS = {"Workflow": "config", "CloudRunService": "env"}


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
    """What ``Get<R>Stats`` may group by and aggregate (``server.stats``).

    ``None`` derives the answer from the column types: group by enums, ids,
    strings, integers and timestamps; aggregate numbers with every operation,
    timestamps with COUNT, COUNT_DISTINCT, MIN and MAX, ids, enums and strings
    with COUNT and COUNT_DISTINCT, JSON and embeddings with COUNT.
    """

    # Own fields that may be group keys; a parent's fields follow the parent's declaration.
    group_by: frozenset[str] | None = None
    # Field -> the operations it allows, by short name: ``{"latency": frozenset({"AVG"})}``.
    aggregate: Mapping[str, frozenset[str]] | None = None


def _get_stats(resource: Resource, request: Message) -> Message:
    from server.stats import get_stats  # Imported here: server.stats imports this module.

    return get_stats(resource, request)


@dataclass(frozen=True, eq=False)
class Resource:
    """One resource: what the generic methods need to know about it."""

    model: type[models.BaseModel]
    message: type[Message]
    # Relation field -> child resource, for children created inline with the parent.
    children: Mapping[str, str] = field(default_factory=dict)
    # The parent foreign key under which ``version`` counts 1, 2, 3, ...
    numbered_by: str | None = None
    # Child lists that ``expand`` may include and filters may reach into
    # (predictions are too many to be either).
    child_relations: tuple[str, ...] = ()
    # Domain rules the standard methods apply on every write (``server.rules``).
    rules: tuple[Rule, ...] = ()
    # RPCs beyond the standard methods: name -> behavior(resource, request).
    custom_methods: Mapping[str, Callable[[Resource, Message], Message]] = field(default_factory=dict)
    # What Get<R>Stats may group by and aggregate; derived from the column types by default.
    stats: StatsFields = field(default_factory=StatsFields)

    def __post_init__(self) -> None:
        # Every resource serves Get<R>Stats, all through one generic implementation.
        stats = {f"Get{self.name}Stats": _get_stats}
        object.__setattr__(self, "custom_methods", {**stats, **self.custom_methods})
        object.__setattr__(self, "rules", self.rules + self._security_rules())

    def _security_rules(self) -> tuple[Rule, ...]:
        """``created_by`` stamped from the caller, and secrets encrypted (``SECRET_COLUMNS``)."""
        columns = {proto_name(f) for f in self.model._meta.sorted_fields}
        stamps = (StampsCreator(),) if STAMPED in columns else ()
        secret = SECRET_COLUMNS.get(self.name)
        return stamps + ((EncryptsSecrets(self.name, secret),) if secret else ())

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
            name for name, f in self.fields.items() if not isinstance(f, (VectorField, BinaryJSONField))
        )

    @cached_property
    def orderable(self) -> frozenset[str]:
        return self.filterable

    @cached_property
    def relations(self) -> dict[str, Relation]:
        """Every parent by its foreign key's name, and the declared child lists."""
        found = {
            f.name: Relation(f.name, resource_of(f.rel_model), f, many=False)
            for f in self.fields.values()
            if isinstance(f, ForeignKeyField)
        }
        backrefs = {fk.backref: fk for fk in self.model._meta.backrefs}
        for name in self.child_relations:
            key = backrefs[name]
            found[name] = Relation(name, resource_of(key.model), key, many=True)
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


def resource_of(model: type[models.BaseModel]) -> Resource:
    return next(resource for resource in RESOURCES.values() if resource.model is model)


RESOURCES: dict[str, Resource] = {
    resource.name: resource
    for resource in (
        Resource(
            models.Workflow,
            pb.Workflow,
            child_relations=("datasets", "models", "experiments"),
            rules=(lifecycle.DeletesReleaseVersions(),),
            custom_methods={"SearchWorkflows": search.search},
        ),
        Resource(
            models.Dataset,
            pb.Dataset,
            children={"versions": "DatasetVersion"},
            child_relations=("versions", "training_jobs"),
            custom_methods={"SearchDatasets": search.search},
        ),
        Resource(models.DatasetVersion, pb.DatasetVersion, numbered_by="dataset"),
        Resource(
            models.MLModel,
            pb.Model,
            children={"versions": "ModelVersion"},
            child_relations=("versions", "endpoints"),
            rules=(lifecycle.DeletesReleaseVersions(),),
            custom_methods={"SearchModels": search.search},
        ),
        Resource(
            models.ModelVersion,
            pb.ModelVersion,
            numbered_by="model",
            child_relations=("deployments",),
            rules=(lifecycle.DeployedIsKeptByTheService(),),
        ),
        Resource(models.Experiment, pb.Experiment, child_relations=("training_jobs",)),
        Resource(
            models.TrainingJob,
            pb.TrainingJob,
            rules=(lifecycle.TRAINING_JOB,),
            custom_methods={"CancelTrainingJob": lifecycle.cancel_training_job},
        ),
        Resource(
            models.Endpoint,
            pb.Endpoint,
            children={"deployments": "Deployment"},
            child_relations=("deployments",),
            rules=(lifecycle.DeletesReleaseVersions(),),
            custom_methods={
                "DeployModelVersion": deployments.deploy_model_version,
                "UndeployModelVersion": deployments.undeploy_model_version,
            },
        ),
        Resource(
            models.Deployment,
            pb.Deployment,
            rules=(
                lifecycle.DEPLOYMENT,
                deployments.KeepsTrafficWithin100(),
                lifecycle.DeploymentsMarkTheirVersion(),
            ),
        ),
        Resource(
            models.Prediction,
            pb.Prediction,
            rules=(lifecycle.PREDICTION,),
            custom_methods={"SearchPredictions": search.search},
        ),
        Resource(
            models.PatternRecognitionJob,
            pb.PatternRecognitionJob,
            rules=(lifecycle.PATTERN_RECOGNITION_JOB,),
            custom_methods={"SearchPatternRecognitionJobs": search.search},
        ),
        Resource(
            models.CloudRunService,
            pb.CloudRunService,
            child_relations=("deployments",),
            custom_methods={"RollbackCloudRunService": deployments.rollback_cloud_run_service},
        ),
        Resource(models.ServiceDeployment, pb.ServiceDeployment, rules=(lifecycle.SERVICE_DEPLOYMENT,)),
    )
}
