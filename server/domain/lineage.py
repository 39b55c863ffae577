"""LineageService.GetLineage: what produced a resource, and what was made from it.

The walked graph is one chain, each link a foreign key (``LINKS``):

    DatasetVersion -version_of-> Dataset -trains-> TrainingJob -produced-> ModelVersion
        -deployed_as-> Deployment -serves_on-> Endpoint

plus ModelVersion -predicted-> Prediction, walked only upstream: a prediction
may be the starting point, but no walk goes down into millions of predictions.
The workflow of a dataset, the experiment of a training job, the model of a
model version or endpoint and the endpoint of a prediction are context
(``CONTEXT``): reported, never walked through, so a sibling that merely shares
a workflow or a model never appears. UPSTREAM follows links backwards,
DOWNSTREAM forwards, and BOTH does each from the start (never down and then up
again, which would reach unrelated siblings).

The walk is one recursive query; each level joins every link out of the level
above through the foreign key indexes. The resources found are then read with
one query per resource type:

    get_lineage(GetLineageRequest(resource_type="Endpoint", id=..., direction=UPSTREAM))
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from models import database
from server.core.codec import required_uuid
from server.core.errors import InvalidArgument, NotFound
from server.core.limits import Limits
from server.core.resource import Catalog
from server.methods.shaping import to_message
from versatil.ml.v1 import lineage_service_pb2 as service

DEFAULT_DEPTH = 5
MAX_DEPTH = 10


@dataclass(frozen=True)
class Link:
    """A walked link: ``source`` rows lead downstream to ``target`` rows through ``table``."""

    source: str
    relation: str
    target: str
    table: str
    source_column: str  # The column of ``table`` holding the source's id.
    target_column: str  # The column of ``table`` holding the target's id.
    downstream: bool = True  # False: walked upstream only.


LINKS = (
    Link("DatasetVersion", "version_of", "Dataset", "dataset_versions", "id", "dataset_id"),
    Link("Dataset", "trains", "TrainingJob", "training_jobs", "dataset_id", "id"),
    Link("TrainingJob", "produced", "ModelVersion", "model_versions", "training_job_id", "id"),
    Link("ModelVersion", "deployed_as", "Deployment", "deployments", "model_version_id", "id"),
    Link("Deployment", "serves_on", "Endpoint", "deployments", "id", "endpoint_id"),
    Link("ModelVersion", "predicted", "Prediction", "predictions", "model_version_id", "id", downstream=False),
)

# Walked resource -> (its column naming a context node, the context's type, the relation).
CONTEXT = {
    "Dataset": ("workflow_id", "Workflow", "contains"),
    "TrainingJob": ("experiment_id", "Experiment", "contains"),
    "ModelVersion": ("model_id", "Model", "contains"),
    "Endpoint": ("model_id", "Model", "contains"),
    "Prediction": ("endpoint_id", "Endpoint", "served"),
}

STARTS = ("Dataset", "DatasetVersion", "TrainingJob", "ModelVersion", "Endpoint", "Deployment", "Prediction")
UP, DOWN = "up", "down"
DIRECTIONS = {
    service.LINEAGE_DIRECTION_UNSPECIFIED: (UP, DOWN),
    service.LINEAGE_DIRECTION_BOTH: (UP, DOWN),
    service.LINEAGE_DIRECTION_UPSTREAM: (UP,),
    service.LINEAGE_DIRECTION_DOWNSTREAM: (DOWN,),
}


def _steps() -> str:
    """The branches of one walk step: every link, in each direction it is walked."""
    branches = []
    for link in LINKS:
        if link.downstream:
            branches.append(
                f"SELECT '{link.target}'::text, l.{link.target_column}, '{link.relation}'::text "
                f"FROM {link.table} l WHERE w.direction = '{DOWN}' AND w.type = '{link.source}' "
                f"AND l.{link.source_column} = w.id"
            )
        branches.append(
            f"SELECT '{link.source}'::text, l.{link.source_column}, '{link.relation}'::text "
            f"FROM {link.table} l WHERE w.direction = '{UP}' AND w.type = '{link.target}' "
            f"AND l.{link.target_column} = w.id AND l.{link.source_column} IS NOT NULL"
        )
    return "\n        UNION ALL ".join(branches)


# Every row is one step of the walk: the node reached, how far, and the link from the node before.
WALK = f"""
WITH RECURSIVE walk(direction, type, id, depth, from_id, relation) AS (
    SELECT d, %(type)s::text, %(id)s::uuid, 0, NULL::uuid, NULL::text FROM unnest(%(directions)s::text[]) d
  UNION
    SELECT w.direction, step.type, step.id, w.depth + 1, w.id, step.relation
    FROM walk w
    CROSS JOIN LATERAL (
        {_steps()}
    ) AS step(type, id, relation)
    WHERE w.depth < %(max_depth)s
)
SELECT direction, type, id, depth, from_id, relation FROM walk
"""


def _request_fields(request: Any) -> tuple[str, uuid.UUID, tuple[str, ...], int]:
    if request.resource_type not in STARTS:
        raise InvalidArgument(
            f"resource_type must be one of {', '.join(STARTS)}, got {request.resource_type!r}", "resource_type"
        )
    start = required_uuid(request.id, "id")
    if request.direction not in DIRECTIONS:
        raise InvalidArgument(f"direction has no value numbered {request.direction}", "direction")
    depth = request.max_depth or DEFAULT_DEPTH
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidArgument(f"max_depth must be between 1 and {MAX_DEPTH}, got {request.max_depth}", "max_depth")
    return request.resource_type, start, DIRECTIONS[request.direction], depth


def get_lineage(catalog: Catalog, request: Message, limits: Limits) -> Message:
    """GetLineage: the graph around one resource, each node with its resource."""
    resource_type, start, directions, max_depth = _request_fields(request)
    with database.atomic():
        start_model = catalog[resource_type].model
        if not start_model.select().where(start_model.id == start).exists():
            raise NotFound(resource_type, str(start))
        steps = database.execute_sql(
            WALK, {"type": resource_type, "id": str(start), "directions": list(directions), "max_depth": max_depth}
        ).fetchall()

        depths: dict[tuple[str, uuid.UUID], int] = {}
        edges: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
        for direction, node_type, node_id, depth, from_id, relation in steps:
            key = (node_type, node_id)
            depths[key] = min(depth, depths.get(key, depth))
            if from_id is not None:
                edges.add((from_id, node_id, relation) if direction == DOWN else (node_id, from_id, relation))

        rows = _read(catalog, depths)
        # A row deleted between the walk and the read (each statement sees its own snapshot)
        # is left out, with its edges.
        depths = {key: depth for key, depth in depths.items() if key in rows}
        context: dict[tuple[str, uuid.UUID], int] = {}
        for (node_type, node_id), depth in depths.items():
            if node_type in CONTEXT:
                column, context_type, relation = CONTEXT[node_type]
                context_id = rows[(node_type, node_id)][column]
                key = (context_type, context_id)
                if key not in depths:
                    context[key] = min(depth + 1, context.get(key, depth + 1))
                edges.add((context_id, node_id, relation))
        rows.update(_read(catalog, context))

    response = service.GetLineageResponse()
    ordered = sorted(
        [(depth, key, False) for key, depth in depths.items()] + [(depth, key, True) for key, depth in context.items()],
        key=lambda item: (item[0], item[2], item[1][0], str(item[1][1])),
    )
    for depth, (node_type, node_id), is_context in ordered:
        spec = catalog[node_type]
        data = rows[(node_type, node_id)]
        node = response.nodes.add(
            resource_type=node_type, id=str(node_id), name=_name(data), depth=depth, context=is_context
        )
        getattr(node, spec.singular).CopyFrom(to_message(spec, data))
    present = {node_id for _, node_id in rows}
    edges = {edge for edge in edges if edge[0] in present and edge[1] in present}
    for source_id, target_id, relation in sorted(edges, key=lambda e: (str(e[0]), str(e[1]), e[2])):
        response.edges.add(source_id=str(source_id), target_id=str(target_id), relation=relation)
    return response


def _read(catalog: Catalog, nodes: dict[tuple[str, uuid.UUID], int]) -> dict[tuple[str, uuid.UUID], dict[str, Any]]:
    """The rows of ``nodes``, with one query per resource type."""
    by_type: dict[str, list[uuid.UUID]] = defaultdict(list)
    for node_type, node_id in nodes:
        by_type[node_type].append(node_id)
    found = {}
    for node_type, ids in by_type.items():
        resource = catalog[node_type]
        for data in resource.model.select().where(resource.model.id.in_(ids)).dicts():
            found[(node_type, data["id"])] = resource.record(data)
    return found


def _name(data: dict[str, Any]) -> str:
    if data.get("name"):
        return data["name"]
    if data.get("version") is not None:
        return f"v{data['version']}"
    return ""


SERVICE = service.DESCRIPTOR.services_by_name["LineageService"]
