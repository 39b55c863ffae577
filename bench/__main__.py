"""``make bench``: the service against the limits of this machine, measured in one run.

    python -m bench --size 1000000     # rows in predictions (make bench SIZE=...)

Builds its own data on a fresh embedded PostgreSQL in a temporary directory,
starts ``python -m server`` on it, and times every operation through a real
gRPC channel and as its limit (see ``bench.harness``). Prints one table and
writes ``bench/results/latest.json`` and ``latest.png``.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg2
import psycopg2.extras
from grpc_health.v1 import health_pb2, health_pb2_grpc

import models
from bench.harness import Row, Timing, combined, measure, table, write_results
from server.ops import database as db
from server.config import usable_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ENDPOINTS = 10
HEAVY_SHARE = 0.3  # of all predictions go to the first endpoint: the one lists page through
PAGE = 100
CLIENTS = 16


def _messages() -> Any:
    from versatil.ml.v1 import common_pb2, prediction_service_pb2, resources_pb2

    return common_pb2, prediction_service_pb2, resources_pb2


# The service's admin token for the run (VERSATIL_DEV_TOKEN); the benchmark calls as an admin.
TOKEN = os.environ.setdefault("VERSATIL_BENCH_TOKEN", f"bench-{uuid.uuid4().hex}")  # Inherited by client processes.


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Sends the run's token with every call."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {TOKEN}")]
        return continuation(details._replace(metadata=metadata), request)


def _channel(target: str) -> grpc.Channel:
    return grpc.intercept_channel(grpc.insecure_channel(target), _Bearer())


class Service:
    """``python -m server`` on ``url``, in a child process stopped by its pid."""

    def __init__(self, url: str, workers: int) -> None:
        env = {**os.environ, "DATABASE_URL": url, "VERSATIL_LISTEN": "127.0.0.1:0", "VERSATIL_WORKERS": str(workers),
               "VERSATIL_DEV_TOKEN": TOKEN}
        self.process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env,
                                        stderr=subprocess.PIPE, text=True)
        self.port = self._port()
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # Keep the pipe drained.
        self.address = f"127.0.0.1:{self.port}"

    def _port(self) -> int:
        for line in self.process.stderr:
            found = re.search(r"serving on [\d.]+:(\d+)", line)
            if found:
                return int(found[1])
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def build_data(url: str, size: int) -> dict[str, Any]:
    """One model version serving ``ENDPOINTS`` endpoints, and ``size`` predictions over 90 days."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    cursor = connection.cursor()
    ids = {name: str(uuid.uuid4()) for name in ("workflow", "model", "version")}
    endpoints = [str(uuid.uuid4()) for _ in range(ENDPOINTS)]
    cursor.execute("INSERT INTO workflows (id, name, status, created_by, config) VALUES (%s, 'bench', 'ACTIVE', 'bench', '{}')",
                   (ids["workflow"],))
    cursor.execute("INSERT INTO models (id, workflow_id, name, type, framework) VALUES (%s, %s, 'bench', 'NLP', 'PYTORCH')",
                   (ids["model"], ids["workflow"]))
    cursor.execute("INSERT INTO model_versions (id, model_id, version, storage_path, artifact_uri, size, checksum, "
                   "metrics, status) VALUES (%s, %s, 1, '', '', 0, '', '{}', 'TRAINED')", (ids["version"], ids["model"]))
    for index, endpoint in enumerate(endpoints):
        cursor.execute("INSERT INTO endpoints (id, model_id, name, status) VALUES (%s, %s, %s, 'READY')",
                       (endpoint, ids["model"], f"endpoint-{index}"))
    started = time.perf_counter()
    cursor.execute(
        """
        INSERT INTO predictions (id, created_at, updated_at, endpoint_id, model_version_id, input, output,
                                 latency, confidence, status)
        SELECT gen_random_uuid(), at, at,
               CASE WHEN random() < %(heavy)s THEN (%(endpoints)s::uuid[])[1]
                    ELSE (%(endpoints)s::uuid[])[2 + floor(random() * %(others)s)::int] END,
               %(version)s, '{"text": "bench"}', '{"label": "ok"}',
               floor(random() * 200)::int, CASE WHEN random() < 0.05 THEN NULL ELSE random() END,
               (ARRAY['COMPLETED', 'COMPLETED', 'FAILED'])[1 + floor(random() * 3)::int]
          FROM generate_series(1, %(size)s) AS g,
               LATERAL (SELECT now() - random() * interval '90 days' + g * interval '0 second' AS at) AS t
        """,
        {"heavy": HEAVY_SHARE, "endpoints": endpoints, "others": ENDPOINTS - 1, "version": ids["version"], "size": size},
    )
    cursor.execute("VACUUM ANALYZE")
    print(f"built {size:,} predictions in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    connection.close()
    return {**ids, "endpoints": endpoints}


class Bench:
    def __init__(self, url: str, service: Service, data: dict[str, Any], repeat: int) -> None:
        self.url, self.service, self.data, self.repeat = url, service, data, repeat
        self.channel = _channel(service.address)
        from versatil.ml.v1 import prediction_service_pb2_grpc

        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.raw = psycopg2.connect(url)
        self.raw.autocommit = True
        self.cursor = self.raw.cursor()
        self.rows: list[Row] = []
        self.empty = measure(lambda: self.health.Check(health_pb2.HealthCheckRequest()), repeat)
        self.common, self.requests, self.resources = _messages()

    def sql(self, statement: str, params: Any = None) -> Any:
        self.cursor.execute(statement, params)
        return self.cursor.fetchall() if self.cursor.description else None

    def add(self, operation: str, service: Timing, limit: Timing | None, goal: float | None, note: str = "") -> None:
        row = Row.compare(operation, service, limit, goal, note)
        self.rows.append(row)
        print(f"  {operation}: ratio {row.ratio}", file=sys.stderr)

    def get_by_id(self) -> None:
        (prediction_id,) = self.sql("SELECT id FROM predictions ORDER BY random() LIMIT 1")[0]
        request = self.requests.GetPredictionRequest(id=str(prediction_id))
        service = measure(lambda: self.predictions.GetPrediction(request), self.repeat)
        raw = measure(lambda: self.sql("SELECT * FROM predictions WHERE id = %s", (prediction_id,)), self.repeat)
        self.add("Get by id", service, combined(self.empty, raw), 0.85)

    def lists(self) -> None:
        endpoint = self.data["endpoints"][0]
        text = f'endpoint_id = "{endpoint}" AND status = COMPLETED'
        raw_sql = ("SELECT * FROM predictions WHERE endpoint_id = %s AND status = 'COMPLETED' {} "
                   "ORDER BY created_at DESC, id LIMIT %s")
        page_one = self.requests.ListPredictionsRequest(filter=text, order_by="created_at desc", page_size=PAGE)
        first = measure(lambda: self.predictions.ListPredictions(page_one), self.repeat)
        raw_first = measure(lambda: self.sql(raw_sql.format(""), (endpoint, PAGE + 1)), self.repeat)
        self.add("List 100, filter + order_by, page 1", first, combined(self.empty, raw_first), 0.8)

        (matching,) = self.sql("SELECT count(*) FROM predictions WHERE endpoint_id = %s AND status = 'COMPLETED'",
                               (endpoint,))[0]
        depth = min(100_000, max(0, matching - 2 * PAGE))
        walk = self.requests.ListPredictionsRequest(filter=text, order_by="created_at desc", page_size=1000,
                                                    read_mask={"paths": ["id"]})
        token, walked = "", 0
        while walked < depth:
            walk.page_size = min(1000, depth - walked)
            walk.page_token = token
            page = self.predictions.ListPredictions(walk)
            token, walked = page.next_page_token, walked + len(page.predictions)
        position = raw_sql.format("").replace("SELECT *", "SELECT created_at, id").replace("LIMIT %s", "OFFSET %s LIMIT 1")
        (last,) = self.sql(position, (endpoint, depth - 1))
        deep_page = self.requests.ListPredictionsRequest(filter=text, order_by="created_at desc", page_size=PAGE,
                                                         page_token=token)
        deep = measure(lambda: self.predictions.ListPredictions(deep_page), self.repeat)
        keyset = "AND created_at <= %s AND (created_at < %s OR (created_at = %s AND id > %s))"
        at, last_id = last
        raw_deep = measure(lambda: self.sql(raw_sql.format(keyset), (endpoint, at, at, at, last_id, PAGE + 1)),
                           self.repeat)
        self.add(f"List 100, page at depth {depth:,}", deep, combined(self.empty, raw_deep), 0.8,
                 f"depth/page-1 time {deep.mean_ms / first.mean_ms:.2f}x, goal <= 1.2x")

    def _prediction(self) -> Any:
        return self.resources.Prediction(
            endpoint_id=self.data["endpoints"][1], model_version_id=self.data["version"],
            input={"text": "bench"}, output={"label": "ok"}, latency=random.randrange(200), confidence=random.random(),
            status=self.resources.PREDICTION_STATUS_COMPLETED)

    def _raw_values(self) -> tuple[Any, ...]:
        return (str(uuid.uuid4()), self.data["endpoints"][1], self.data["version"], '{"text": "bench"}',
                '{"label": "ok"}', random.randrange(200), random.random(), "COMPLETED")

    RAW_INSERT = ("INSERT INTO predictions (id, endpoint_id, model_version_id, input, output, latency, confidence, "
                  "status) VALUES %s")

    def creates(self) -> None:
        request = self.requests.CreatePredictionRequest(prediction=self._prediction())
        service = measure(lambda: self.predictions.CreatePrediction(request), self.repeat)
        one = self.RAW_INSERT.replace("VALUES %s", "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
        raw = measure(lambda: self.sql(one, self._raw_values()), self.repeat)
        self.add("Create one prediction", service, combined(self.empty, raw), 0.8)

        batch = self.requests.BatchCreatePredictionsRequest(
            requests=[self.requests.CreatePredictionRequest(prediction=self._prediction()) for _ in range(1000)])
        repeat = max(5, self.repeat // 50)
        service = measure(lambda: self.predictions.BatchCreatePredictions(batch), repeat, warmup=2)
        raw = measure(lambda: psycopg2.extras.execute_values(
            self.cursor, self.RAW_INSERT, [self._raw_values() for _ in range(1000)], page_size=1000), repeat, warmup=2)
        self.add("BatchCreate 1000 predictions", service, raw, 0.8,
                 f"{1000 * service.ops_per_s:,.0f} rows/s")

    def stats(self) -> None:
        endpoint = self.data["endpoints"][0]
        op = self.common.AggregationOp
        per_endpoint = self.common.StatsRequest(
            filter=f'endpoint_id = "{endpoint}"',
            aggregations=[self.common.Aggregation(op=op.Value("AGGREGATION_OP_COUNT")),
                          self.common.Aggregation(op=op.Value("AGGREGATION_OP_AVG"), field="latency"),
                          self.common.Aggregation(op=op.Value("AGGREGATION_OP_AVG"), field="confidence")])
        repeat = max(5, self.repeat // 20)
        service = measure(lambda: self.predictions.GetPredictionStats(per_endpoint), repeat, warmup=2)
        raw = measure(lambda: self.sql("SELECT count(*), avg(latency), avg(confidence) FROM predictions "
                                       "WHERE endpoint_id = %s", (endpoint,)), repeat, warmup=2)
        self.add("Prediction stats per endpoint", service, combined(self.empty, raw), 0.9)

        daily = self.common.StatsRequest()
        daily.CopyFrom(per_endpoint)
        daily.time_bucket.field = "created_at"
        daily.time_bucket.interval = self.common.TimeBucketInterval.Value("TIME_BUCKET_INTERVAL_DAY")
        raw_sql = ("SELECT date_trunc('day', created_at, 'UTC'), count(*), avg(latency), avg(confidence) "
                   "FROM predictions WHERE endpoint_id = %s GROUP BY 1 ORDER BY 1")
        service = measure(lambda: self.predictions.GetPredictionStats(daily), repeat, warmup=2)
        raw = measure(lambda: self.sql(raw_sql, (endpoint,)), repeat, warmup=2)
        groups = self.predictions.GetPredictionStats(daily).groups
        expected = self.sql(raw_sql, (endpoint,))
        same = len(groups) == len(expected) and all(
            int(g.values["count"].number_value) == row[1] for g, row in zip(groups, expected))
        self.add("Daily stats, one endpoint, 90 days", service, raw, 20.0,
                 "same numbers as raw" if same else "NUMBERS DIFFER FROM RAW")

    def vector_search(self, count: int, queries: int = 100) -> None:
        """Recall@10 of filtered HNSW search against exact search, over clustered embeddings."""
        from versatil.ml.v1 import prediction_service_pb2, search_pb2

        endpoint = self.data["endpoints"][2]
        started = time.perf_counter()
        # Bulk loading: drop the HNSW indexes, load, then build the one this step searches with
        # (cosine) in one pass, as one would load a production table; inserting 100k rows into
        # three live HNSW graphs takes far longer than building one.
        hnsw = self.sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'predictions' "
                        "AND indexdef LIKE '%%USING hnsw%%'")
        for name, _ in hnsw:
            self.sql(f'DROP INDEX "{name}"')
        # Realistic structure: 200 topics, each embedding a topic centre plus noise, normalized
        # (uniform noise has no meaningful nearest neighbours).
        self.sql("CREATE TEMP TABLE centres AS SELECT c, (SELECT array_agg(random() - 0.5) FROM "
                 "generate_series(1, 384) WHERE c > 0) AS v FROM generate_series(1, 200) AS c")
        self.sql(
            """
            INSERT INTO predictions (id, endpoint_id, model_version_id, input, latency, status, embedding)
            SELECT gen_random_uuid(), %s, %s, '{}', 0, 'COMPLETED',
                   l2_normalize((SELECT array_agg(x + (random() - 0.5) * 0.25) FROM unnest(v) AS x)::vector)
              FROM generate_series(1, %s) AS g JOIN centres ON c = 1 + g %% 200
            """, (endpoint, self.data["version"], count))
        self.sql("SET maintenance_work_mem = '1GB'")
        for _, definition in hnsw:
            if "vector_cosine_ops" in definition:
                self.sql(definition)
        self.sql("ANALYZE predictions")
        print(f"built {count:,} embeddings and their cosine HNSW index in {time.perf_counter() - started:.1f}s",
              file=sys.stderr)
        probes = [row[0] for row in self.sql(
            "SELECT l2_normalize((SELECT array_agg(x + (random() - 0.5) * 0.25) FROM unnest(v) AS x)::vector)::text "
            "FROM centres ORDER BY random() LIMIT %s", (queries,))]
        text = f'endpoint_id = "{endpoint}"'
        exact_sql = ("SELECT id FROM predictions WHERE endpoint_id = %s AND embedding IS NOT NULL "
                     "ORDER BY embedding <=> %s::vector LIMIT 10")
        found, expected = [], []
        requests = [prediction_service_pb2.SearchPredictionsRequest(
            embedding=[float(x) for x in probe.strip("[]").split(",")], top_k=10, filter=text,
            metric=search_pb2.DISTANCE_METRIC_COSINE, read_mask={"paths": ["id"]}) for probe in probes]
        for probe, request in zip(probes, requests):
            found.append({r.prediction.id for r in self.predictions.SearchPredictions(request).results})
            self.sql("BEGIN")
            self.sql("SET LOCAL enable_indexscan = off")
            expected.append({str(row[0]) for row in self.sql(exact_sql, (endpoint, probe))})
            self.sql("COMMIT")
        recall = sum(len(f & e) for f, e in zip(found, expected)) / sum(len(e) for e in expected)
        cycle = iter(range(10**9))
        service = measure(lambda: self.predictions.SearchPredictions(requests[next(cycle) % queries]),
                          max(50, self.repeat // 5), warmup=5)
        raw = measure(lambda: self.sql(exact_sql, (endpoint, probes[next(cycle) % queries])),
                      max(50, self.repeat // 5), warmup=5)
        self.add(f"Vector search top-10, {count:,} x 384", service, combined(self.empty, raw), None,
                 f"recall@10 {recall:.3f} (goal >= 0.95), p50 {service.p50_ms:.1f} ms (goal <= 10)")

    def concurrent(self, seconds: float, address: str, workers: int) -> None:
        endpoint = self.data["endpoints"][1]
        (ids,) = zip(*self.sql("SELECT id::text FROM predictions WHERE endpoint_id = %s LIMIT 200", (endpoint,)))
        def run(kind: str, target: str) -> Timing:
            work = [(kind, target, endpoint, self.data["version"], list(ids), seconds)] * CLIENTS
            with ProcessPoolExecutor(CLIENTS) as pool:
                return _merge(list(pool.map(_mixed_client, work)), seconds)

        service, raw = run("service", address), run("raw", self.url)
        plural = "s" if workers > 1 else ""
        self.rows.append(Row.compare(f"{CLIENTS} clients, mixed Get/List/Create, {workers} worker{plural}", service,
                                     raw, None, f"{service.ops_per_s:,.0f} vs {raw.ops_per_s:,.0f} ops/s raw"))


def _merge(results: list[list[float]], seconds: float) -> Timing:
    samples = sorted(s for one in results for s in one)
    count = len(samples)
    # Throughput of all clients together: report it as the mean time between completions.
    return Timing(p50_ms=samples[count // 2], p99_ms=samples[int(count * 0.99)], mean_ms=seconds * 1000 / count)


def _mixed_client(job: tuple[str, str, str, str, list[str], float]) -> list[float]:
    """One client: Gets, Lists and Creates in a 6:2:2 mix for ``seconds``; its latencies in ms."""
    kind, target, endpoint, version, ids, seconds = job
    rng = random.Random()
    samples: list[float] = []
    if kind == "service":
        from versatil.ml.v1 import prediction_service_pb2 as requests
        from versatil.ml.v1 import prediction_service_pb2_grpc, resources_pb2

        stub = prediction_service_pb2_grpc.PredictionServiceStub(_channel(target))
        page = requests.ListPredictionsRequest(filter=f'endpoint_id = "{endpoint}"', order_by="created_at desc",
                                               page_size=20)
        create = requests.CreatePredictionRequest(prediction=resources_pb2.Prediction(
            endpoint_id=endpoint, model_version_id=version, input={"x": 1}, latency=5))
        calls = [lambda: stub.GetPrediction(requests.GetPredictionRequest(id=rng.choice(ids)))] * 6 + \
                [lambda: stub.ListPredictions(page)] * 2 + [lambda: stub.CreatePrediction(create)] * 2
    else:
        connection = psycopg2.connect(target)
        connection.autocommit = True
        cursor = connection.cursor()

        def run(sql: str, params: Any) -> None:
            cursor.execute(sql, params)
            if cursor.description:
                cursor.fetchall()

        calls = [lambda: run("SELECT * FROM predictions WHERE id = %s", (rng.choice(ids),))] * 6 + \
                [lambda: run("SELECT * FROM predictions WHERE endpoint_id = %s ORDER BY created_at DESC, id "
                             "LIMIT 21", (endpoint,))] * 2 + \
                [lambda: run("INSERT INTO predictions (id, endpoint_id, model_version_id, input, latency, status) "
                             "VALUES (%s, %s, %s, '{\"x\": 1}', 5, 'PENDING')", (str(uuid.uuid4()), endpoint, version))] * 2
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        call = rng.choice(calls)
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="predictions in the table")
    parser.add_argument("--repeat", type=int, default=1000, help="timed calls per single-row operation")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the concurrent mix")
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="worker processes of the server the concurrent mix is repeated against")
    parser.add_argument("--vectors", type=int, default=100_000, help="embeddings searched (0: skip)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="versatil-bench-") as data_dir:
        url = db.start_embedded(Path(data_dir))
        db.connect(url)
        db.apply_migrations()
        data = build_data(url, args.size)
        service = Service(url, 1)
        try:
            bench = Bench(url, service, data, args.repeat)
            for step in (bench.get_by_id, bench.lists, bench.creates, bench.stats):
                step()
            if args.vectors:
                bench.vector_search(args.vectors)
            bench.concurrent(args.seconds, service.address, 1)
        finally:
            service.stop()
        if args.workers > 1:
            scaled = Service(url, args.workers)
            try:
                bench.concurrent(args.seconds, scaled.address, args.workers)
            finally:
                scaled.stop()
        models.database.close_all()
        db.stop_embedded(Path(data_dir))
    print(table(bench.rows))
    json_path, chart = write_results(bench.rows, RESULTS)
    print(f"\nwrote {json_path.relative_to(ROOT)}" + (f" and {chart.relative_to(ROOT)}" if chart else ""))


if __name__ == "__main__":
    main()
