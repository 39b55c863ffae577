"""The 13 resources, each declared once; the generic layers serve them all.

A declaration names the model, the message and what is special about the
resource; everything else (parents, output-only and immutable fields, which
fields are required, filterable and orderable) is derived from the model:

    declare(models.Dataset, pb.Dataset, children=("versions",), searchable=True)

Adding a resource means a message, a model and one declaration here. What a
declaration may add:

* ``rules``: domain rules applied on every write (lifecycles in
  ``server.domain.lifecycle``, the traffic invariant in ``server.domain.deployments``);
* ``secrets``: the JSON column whose ``secrets`` values are encrypted at rest;
* ``searchable``: serve ``Search<R>s`` (vector search) to readers;
* ``custom_methods``: further RPCs, each with the weakest role that may call it.

Every resource with a ``created_by`` column has it stamped from the caller.
The catalog is built once per process, with the process's encryption keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

import models
from server.core.principal import Role
from server.core.resource import STAMPED, Catalog, Method, Resource, StatsFields
from server.core.rules import Rule
from server.domain import deployments, lifecycle, lineage, search
from server.domain.secrets import EncryptsSecrets, KeyRing
from server.domain.stamps import StampsCreator
from server.stats.rollup import rollup_source
from versatil.ml.v1 import resources_pb2 as pb


def build_catalog(keys: KeyRing) -> Catalog:
    """Every resource and the services of no single resource, sealing secrets with ``keys``."""

    def declare(
        model: type[models.BaseModel],
        message: type[Message],
        *,
        rules: tuple[Rule, ...] = (),
        secrets: str | None = None,
        searchable: bool = False,
        custom_methods: Mapping[str, Method] | None = None,
        **shape: Any,
    ) -> Resource:
        name = message.DESCRIPTOR.name
        stamps = (StampsCreator(),) if STAMPED in model._meta.fields else ()
        sealed = (EncryptsSecrets(name, secrets, keys),) if secrets else ()
        methods = dict(custom_methods or {})
        if searchable:
            methods[f"Search{name}s"] = Method(search.search, Role.READER)
        return Resource(model, message, rules=(*rules, *stamps, *sealed), custom_methods=methods, **shape)

    releases = lifecycle.DeletesReleaseVersions()
    return Catalog(
        [
            declare(
                models.Workflow,
                pb.Workflow,
                child_relations=("datasets", "models", "experiments"),
                rules=(releases,),
                secrets="config",
                searchable=True,
            ),
            declare(
                models.Dataset,
                pb.Dataset,
                children=("versions",),
                child_relations=("versions", "training_jobs"),
                searchable=True,
            ),
            declare(models.DatasetVersion, pb.DatasetVersion, numbered_by="dataset"),
            declare(
                models.MLModel,
                pb.Model,
                children=("versions",),
                child_relations=("versions", "endpoints"),
                rules=(releases,),
                searchable=True,
            ),
            declare(
                models.ModelVersion,
                pb.ModelVersion,
                numbered_by="model",
                child_relations=("deployments",),
                rules=(lifecycle.DeployedIsKeptByTheService(),),
            ),
            declare(models.Experiment, pb.Experiment, child_relations=("training_jobs",)),
            declare(
                models.TrainingJob,
                pb.TrainingJob,
                rules=(lifecycle.TRAINING_JOB,),
                custom_methods={"CancelTrainingJob": Method(lifecycle.cancel_training_job, Role.WRITER)},
            ),
            declare(
                models.Endpoint,
                pb.Endpoint,
                children=("deployments",),
                child_relations=("deployments",),
                rules=(releases,),
                custom_methods={
                    "DeployModelVersion": Method(deployments.deploy_model_version, Role.WRITER),
                    "UndeployModelVersion": Method(deployments.undeploy_model_version, Role.WRITER),
                },
            ),
            declare(
                models.Deployment,
                pb.Deployment,
                rules=(
                    lifecycle.DEPLOYMENT,
                    deployments.KeepsTrafficWithin100(),
                    lifecycle.DeploymentsMarkTheirVersion(),
                ),
            ),
            declare(
                models.Prediction,
                pb.Prediction,
                rules=(lifecycle.PREDICTION,),
                searchable=True,
                stats=StatsFields(faster_source=rollup_source),
            ),
            declare(
                models.PatternRecognitionJob,
                pb.PatternRecognitionJob,
                rules=(lifecycle.PATTERN_RECOGNITION_JOB,),
                searchable=True,
            ),
            declare(
                models.CloudRunService,
                pb.CloudRunService,
                child_relations=("deployments",),
                secrets="env",
                custom_methods={
                    "RollbackCloudRunService": Method(deployments.rollback_cloud_run_service, Role.WRITER)
                },
            ),
            declare(models.ServiceDeployment, pb.ServiceDeployment, rules=(lifecycle.SERVICE_DEPLOYMENT,)),
        ],
        services={lineage.SERVICE: {"GetLineage": Method(lineage.get_lineage, Role.READER)}},
    )
