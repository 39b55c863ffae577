"""Vector search (server/search.py) through a real channel, and the pgvector machinery under it.

Embeddings have structure, as real ones do: a few random cluster centres on the unit sphere,
each point a centre plus noise, normalised (uniform noise has no meaningful neighbours). Each
test scopes its rows with a filter of its own. Distances are compared with pgvector's own
operators evaluated by PostgreSQL on the same stored rows.
"""
from __future__ import annotations

import math
import random
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from models import EMBEDDING_DIMENSIONS
from tests.support import assert_invalid, message, rpc_error, unique
from tests.support.domain import enum
from versatil.ml.v1 import search_pb2

Code = grpc.StatusCode
COSINE, L2, IP = search_pb2.DISTANCE_METRIC_COSINE, search_pb2.DISTANCE_METRIC_L2, search_pb2.DISTANCE_METRIC_INNER_PRODUCT
OPERATORS = {COSINE: "<=>", L2: "<->", IP: "<#>"}
WORKFLOWS = 300


def unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


class Clusters:
    """Points around a few random centres on the unit sphere, normalised."""

    def __init__(self, seed: int, centres: int = 6, noise: float = 0.6) -> None:
        self.rng = random.Random(seed)
        self.centres = [unit([self.rng.gauss(0, 1) for _ in range(EMBEDDING_DIMENSIONS)]) for _ in range(centres)]
        self.sigma = noise / math.sqrt(EMBEDDING_DIMENSIONS)  # The noise vector's length is about ``noise``.

    def near(self, centre: int) -> list[float]:
        return unit([c + self.rng.gauss(0, self.sigma) for c in self.centres[centre]])

    def points(self, count: int) -> list[list[float]]:
        return [self.near(i % len(self.centres)) for i in range(count)]


def vector_text(values: Any) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def pg_distances(rows: Any, table: str, ids: list[str], query: Any, metric: int) -> dict[str, float]:
    """Each row's distance to ``query`` as PostgreSQL computes it with pgvector's operator."""
    cursor = rows.database.execute_sql(
        f"SELECT id::text, embedding {OPERATORS[metric]} %s::vector FROM {table} WHERE id = ANY(%s::uuid[])",
        (vector_text(query), ids),
    )
    return dict(cursor.fetchall())


def pg_nearest(rows: Any, table: str, where: str, params: tuple, query: Any, metric: int, k: int) -> list[str]:
    """The exact ``k`` nearest (no index: a sequential scan and a sort)."""
    with rows.database.atomic():
        rows.database.execute_sql("SET LOCAL enable_indexscan = off")
        cursor = rows.database.execute_sql(
            f"SELECT id::text FROM {table} WHERE embedding IS NOT NULL AND {where} "
            f"ORDER BY embedding {OPERATORS[metric]} %s::vector, id LIMIT %s",
            (*params, vector_text(query), k),
        )
        return [row[0] for row in cursor.fetchall()]


def search(api: Any, resource: str, embedding: Any, **fields: Any) -> Any:
    return api.call(resource, f"Search{resource}s", embedding=embedding, **fields)


@pytest.fixture(scope="module")
def workflows(api: Any) -> dict[str, Any]:
    """300 workflows in 6 clusters; every tenth one ACTIVE, the rest DRAFT. Their ``owner``, a
    value of ``n8n_workflow_id`` no other test uses, scopes the searches to them."""
    clusters = Clusters(seed=5)
    owner = unique("search")
    requests = [
        message("CreateWorkflowRequest", workflow=message(
            "Workflow", name=f"wf-{i}", n8n_workflow_id=owner, embedding=point,
            status=enum("Workflow", "ACTIVE" if i % 10 == 0 else "DRAFT"), config={"cluster": i % 6},
        ))
        for i, point in enumerate(clusters.points(WORKFLOWS))
    ]
    created = api.call("Workflow", "BatchCreateWorkflows", requests=requests).workflows
    return {"owner": owner, "clusters": clusters, "ids": [w.id for w in created]}


@pytest.mark.parametrize("metric", [COSINE, L2, IP])
def test_filtered_search_returns_top_k_with_pgvectors_distances(
    api: Any, rows: Any, workflows: dict[str, Any], metric: int
) -> None:
    query = workflows["clusters"].near(0)
    scope = f'n8n_workflow_id = "{workflows["owner"]}" AND status = ACTIVE'  # 30 of the 300 match.
    response = search(api, "Workflow", query, top_k=20, metric=metric, filter=scope)

    found = [r.workflow for r in response.results]
    assert len(found) == 20
    assert all(w.n8n_workflow_id == workflows["owner"] and w.status == enum("Workflow", "ACTIVE") for w in found)
    sent = list(message("SearchWorkflowsRequest", embedding=query).embedding)  # As float32, like the server.
    exact = pg_distances(rows, "workflows", [w.id for w in found], sent, metric)
    assert [r.distance for r in response.results] == [exact[w.id] for w in found]
    assert [r.distance for r in response.results] == sorted(r.distance for r in response.results)

    nearest = pg_nearest(rows, "workflows", "n8n_workflow_id = %s AND status = 'ACTIVE'", (workflows["owner"],), sent, metric, 20)
    assert len(set(nearest) & {w.id for w in found}) >= 18  # Recall of the approximate index.


def test_fewer_matches_than_top_k_returns_every_match(api: Any, workflows: dict[str, Any]) -> None:
    scope = f'n8n_workflow_id = "{workflows["owner"]}" AND status = ACTIVE AND config.cluster = 4'
    response = search(api, "Workflow", workflows["clusters"].near(1), top_k=50, filter=scope)
    assert len(response.results) == 10  # i % 10 == 0 and i % 6 == 4: i = 10, 40, 70, ..., 280.


def test_the_nearest_cluster_comes_first(api: Any, workflows: dict[str, Any]) -> None:
    response = search(api, "Workflow", workflows["clusters"].near(2), top_k=10, filter=f'n8n_workflow_id = "{workflows["owner"]}"')
    assert len(response.results) == 10
    assert {int(r.workflow.name.split("-")[1]) % 6 for r in response.results} == {2}


def test_read_mask_shapes_the_results(api: Any, workflows: dict[str, Any]) -> None:
    response = search(
        api, "Workflow", workflows["clusters"].near(4), top_k=3,
        filter=f'n8n_workflow_id = "{workflows["owner"]}"', read_mask=field_mask_pb2.FieldMask(paths=["id", "name"]),
    )
    for result in response.results:
        assert result.workflow.id and result.workflow.name
        assert not result.workflow.embedding and not result.workflow.created_by and not result.workflow.etag
        assert result.distance >= 0


def test_default_top_k_is_ten(api: Any, workflows: dict[str, Any]) -> None:
    response = search(api, "Workflow", workflows["clusters"].near(5), filter=f'n8n_workflow_id = "{workflows["owner"]}"')
    assert len(response.results) == 10


@pytest.mark.parametrize("resource", ["Dataset", "Model", "Prediction", "PatternRecognitionJob"])
def test_every_embedded_resource_is_searchable(api: Any, rows: Any, resource: str) -> None:
    clusters = Clusters(seed=11, centres=3)
    if resource == "Prediction":
        served = {"endpoint_id": api.create("Endpoint").id}
        served["model_version_id"] = api.create("ModelVersion").id
        parent, scope_key = served, "endpoint_id"
    elif resource in ("Dataset", "Model"):
        parent = {"workflow_id": api.create("Workflow").id}
        scope_key = "workflow_id"
    else:
        parent, scope_key = {"source_uri": unique("gs://prj/")}, "source_uri"
    made = [api.create(resource, embedding=point, **parent) for point in clusters.points(12)]
    singular = {"PatternRecognitionJob": "pattern_recognition_job"}.get(resource, resource.lower())
    scope = f'{scope_key} = "{parent[scope_key]}"'

    query = clusters.near(1)
    response = search(api, resource, query, top_k=4, metric=L2, filter=scope)
    ids = [getattr(r, singular).id for r in response.results]
    assert len(ids) == 4 and set(ids) <= {m.id for m in made}
    sent = list(message(f"Search{resource}sRequest", embedding=query).embedding)
    table = {"Dataset": "datasets", "Model": "models", "Prediction": "predictions", "PatternRecognitionJob": "pattern_recognition_jobs"}[resource]
    exact = pg_distances(rows, table, ids, sent, L2)
    assert [r.distance for r in response.results] == [exact[i] for i in ids]
    assert {i for i, row in enumerate(made) if row.id in ids} == {1, 4, 7, 10}  # Cluster 1, whole.


def test_rows_without_an_embedding_are_never_returned(api: Any) -> None:
    owner = unique("bare")
    api.create("Workflow", n8n_workflow_id=owner)
    with_one = api.create("Workflow", n8n_workflow_id=owner, embedding=Clusters(seed=3).near(0))
    response = search(api, "Workflow", Clusters(seed=4).near(0), top_k=5, filter=f'n8n_workflow_id = "{owner}"')
    assert [r.workflow.id for r in response.results] == [with_one.id]


BAD = {
    "short embedding": ({"embedding": [0.1] * 383}, "embedding"),
    "long embedding": ({"embedding": [0.1] * 385}, "embedding"),
    "no embedding": ({"embedding": []}, "embedding"),
    "nan": ({"embedding": [math.nan] + [0.1] * 383}, "embedding"),
    "infinity": ({"embedding": [0.1] * 383 + [math.inf]}, "embedding"),
    "zeros under cosine": ({"embedding": [0.0] * 384}, "embedding"),
    "top_k 1001": ({"top_k": 1001}, "top_k"),
    "negative top_k": ({"top_k": -1}, "top_k"),
    "ef_search 1001": ({"ef_search": 1001}, "ef_search"),
    "negative ef_search": ({"ef_search": -5}, "ef_search"),
    "unknown metric": ({"metric": 9}, "metric"),
    "bad filter": ({"filter": "colour = red"}, "filter"),
    "bad read_mask": ({"read_mask": field_mask_pb2.FieldMask(paths=["colour"])}, "read_mask"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_are_invalid_argument(api: Any, case: str) -> None:
    fields, field = BAD[case]
    fields = {"embedding": [0.1] * 384, **fields}
    assert_invalid(rpc_error(api.call, "Workflow", "SearchWorkflows", **fields), field)


def test_zeros_are_a_fine_query_for_l2(api: Any, workflows: dict[str, Any]) -> None:
    response = search(api, "Workflow", [0.0] * 384, top_k=1, metric=L2, filter=f'n8n_workflow_id = "{workflows["owner"]}"')
    assert len(response.results) == 1 and response.results[0].distance == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- the index, under the service

# The HNSW index of each metric, and the filtered walk with and without iterative scans, checked
# at the SQL level: a filter on an unindexed JSON key with sequential scans off leaves the HNSW
# index as the only way to answer ORDER BY distance LIMIT k.
SEARCH_SQL = (
    "SELECT id FROM workflows WHERE embedding IS NOT NULL AND config->>'tag' = %s "
    "ORDER BY embedding {op} %s::vector LIMIT 10"
)


@pytest.mark.parametrize(("metric", "index"), [(COSINE, "cosine"), (L2, "l2"), (IP, "inner_product")])
def test_each_metric_has_an_hnsw_index_and_iterative_scans_fill_a_filtered_search(
    api: Any, rows: Any, metric: int, index: str
) -> None:
    clusters = Clusters(seed=21)
    tag = uuid.uuid4().hex
    requests = [
        message("CreateWorkflowRequest", workflow=message(
            "Workflow", name=f"it-{i}", created_by="iterative", embedding=point,
            config={"tag": tag if i % 10 == 0 else "other"},
        ))
        for i, point in enumerate(clusters.points(400))
    ]
    api.call("Workflow", "BatchCreateWorkflows", requests=requests)
    query = vector_text(clusters.near(0))
    sql = SEARCH_SQL.format(op=OPERATORS[metric])
    database = rows.database

    def run(*settings: str) -> tuple[int, str]:
        with database.atomic():
            for setting in ("SET LOCAL enable_seqscan = off", "SET LOCAL hnsw.ef_search = 10", *settings):
                database.execute_sql(setting)
            plan = "\n".join(r[0] for r in database.execute_sql("EXPLAIN " + sql, (tag, query)).fetchall())
            return len(database.execute_sql(sql, (tag, query)).fetchall()), plan

    found, plan = run("SET LOCAL hnsw.iterative_scan = off")
    assert f"workflows_embedding_{index}" in plan
    assert found < 10  # 10 candidates, of which only about 1 in 10 passes the filter.
    found, _ = run("SET LOCAL hnsw.iterative_scan = relaxed_order")
    assert found == 10  # The walk went on until 10 rows passed (40 match).
