"""HNSW indexes for vector search: one per embedding column and distance metric.

``Search<R>s`` serves cosine (``<=>``), L2 (``<->``) and inner-product (``<#>``)
distances; pgvector uses an HNSW index only for the operator class it was built
with, so every ``embedding`` column gets one index per metric. Rows without an
embedding are not indexed. The DDL is a frozen copy of what ``models.py``
declares (``index_embeddings``), with its build parameters: ef_construction 200
rather than pgvector's 64, whose graphs find only about 0.8 of the true 10
nearest neighbours of clustered embeddings.

Building HNSW indexes over tables that already hold many embeddings takes a
while and holds a lock that blocks writes to the table meanwhile; on a large
production table, create the same indexes by hand first with
``CREATE INDEX CONCURRENTLY`` (this migration then finds them and skips them).
"""

TABLES = ("workflows", "datasets", "models", "predictions", "pattern_recognition_jobs")
OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "inner_product": "vector_ip_ops"}


def _indexes():
    for table in TABLES:
        for metric, opclass in OPCLASSES.items():
            yield f"{table}_embedding_{metric}", table, opclass


def up(migrator, db):
    for name, table, opclass in _indexes():
        db.execute_sql(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" USING hnsw (embedding {opclass}) '
            "WITH (m = 16, ef_construction = 200)"
        )


def down(migrator, db):
    for name, _, _ in _indexes():
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
