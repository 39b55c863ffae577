"""Vector search (pgvector): ``Search<R>s`` for every resource with an ``embedding``.

    SearchDatasets(embedding=[... 384 floats], top_k=10, metric=DISTANCE_METRIC_COSINE,
                   filter='type = IMAGE', read_mask=["id", "name"])

One SELECT per call holds both the filter (the List language, compiled by
``server.query.filters``) and the ordering by distance, so PostgreSQL walks the HNSW
index of the metric (``models.index_embeddings``) and applies the filter as it
goes. With pgvector 0.8's ``hnsw.iterative_scan = relaxed_order`` the walk goes
on past ``ef_search`` candidates until ``top_k`` rows pass the filter, instead
of returning fewer; "relaxed" means rows may arrive slightly out of order, so
they are sorted again by their exact distance. Should the walk still stop short
(a very selective filter can exhaust ``hnsw.max_scan_tuples``), the query runs
once more without the HNSW index: an exact search over the rows the filter
keeps, which is cheap precisely when the filter keeps few.

Distances are pgvector's own (``<=>``, ``<->``, ``<#>``): smaller is closer.
"""
from __future__ import annotations

from google.protobuf.message import Message

from models import database
from server.core.codec import checked_embedding
from server.core.errors import InvalidArgument
from server.core.limits import Limits
from server.core.resource import Resource
from server.methods.shaping import Shape
from server.query.filters import compile_filter

DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
DEFAULT_EF_SEARCH = 100
MAX_EF_SEARCH = 1000

# DistanceMetric number -> (name, the VectorField method that writes pgvector's operator).
METRICS = {
    0: ("COSINE", "cosine_distance"),
    1: ("COSINE", "cosine_distance"),
    2: ("L2", "l2_distance"),
    3: ("INNER_PRODUCT", "max_inner_product"),
}


def _bounded(value: int, default: int, maximum: int, field: str) -> int:
    value = value or default
    if not 1 <= value <= maximum:
        raise InvalidArgument(f"{field} must be between 1 and {maximum}, got {value}", field)
    return value


def search(resource: Resource, request: Message, limits: Limits) -> Message:
    """Search<R>s: the ``top_k`` rows nearest to ``request.embedding`` that match ``request.filter``."""
    if not request.embedding:
        raise InvalidArgument("embedding is required", "embedding")
    embedding = checked_embedding(request.embedding, "embedding")
    top_k = _bounded(request.top_k, DEFAULT_TOP_K, MAX_TOP_K, "top_k")
    ef_search = _bounded(request.ef_search, max(DEFAULT_EF_SEARCH, top_k), MAX_EF_SEARCH, "ef_search")
    if request.metric not in METRICS:
        raise InvalidArgument(f"metric has no value numbered {request.metric}", "metric")
    metric, operator = METRICS[request.metric]
    if metric == "COSINE" and not any(embedding):
        raise InvalidArgument("an embedding of all zeros has no cosine distance to anything", "embedding")
    where = compile_filter(resource, request.filter, limits)
    shape = Shape.of(resource, request.read_mask.paths)

    model = resource.model
    distance = getattr(model.embedding, operator)(embedding)
    query = (
        model.select(*shape.select(), distance.alias("distance"))
        .where(model.embedding.is_null(False), where)
        .order_by(distance)
        .limit(top_k)
    )
    with database.atomic():
        database.execute_sql(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', %s, true)",
            (str(ef_search),),
        )
        rows = list(query.dicts())
        if len(rows) < top_k and request.filter:
            database.execute_sql("SET LOCAL enable_indexscan = off")  # Exact: no HNSW, no early stop.
            rows = list(query.dicts())
    rows.sort(key=lambda row: (row["distance"], row["id"]))
    records = [resource.record(row) for row in rows]

    response = resource.response("Search")
    for row, found in zip(rows, shape.render(records)):
        result = response.results.add(distance=row["distance"])
        getattr(result, resource.singular).CopyFrom(found)
    return response
