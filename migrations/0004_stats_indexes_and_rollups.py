"""Indexes for prediction stats, and an hourly rollup of predictions kept exact by triggers.

Indexes. Users aggregate predictions per endpoint or per model version over a time range (average
latency and confidence, counts by status, daily buckets). Two covering indexes serve exactly
those queries from the index alone, with no visit to the wide rows (``input``, ``output``,
``embedding``):

    predictions (endpoint_id, created_at)      INCLUDE (model_version_id, status, latency, confidence)
    predictions (model_version_id, created_at) INCLUDE (endpoint_id, status, latency, confidence)

Each leads with a foreign key, so it also serves that key's lookups and ON DELETE CASCADE; the
single-column ``predictions_endpoint_id`` and ``predictions_model_version_id`` became redundant and
are dropped (one index less to maintain per ingested row). The other tables are small (the seed
expects at most 20,000 training jobs and far fewer model versions): their existing indexes do.

Rollup. ``prediction_hourly_rollups`` holds, per endpoint, model version, status and UTC hour, the
count of predictions, the sum, minimum and maximum of latency, and the count, sum, minimum and
maximum of confidence. Statement-level triggers with transition tables keep it exact inside the
transaction of every write to ``predictions``:

* insert (one row or a batch): the new rows' totals are added to their groups (upsert), in key
  order so that concurrent batches lock groups in one order;
* update and delete (cascades from endpoints and model versions included): the rollup rows of
  every group touched are locked in key order, then the groups rows left are recomputed from
  ``predictions`` by a second statement, which in READ COMMITTED sees every transaction committed
  meanwhile (a minimum or maximum cannot be subtracted); rows that moved into other groups are
  added as on insert. Updates that change none of the rolled-up columns cost nothing more;
* truncate: the rollup is truncated too.

Writers of one group (the same endpoint, model version, status and hour) therefore queue on its
rollup row from their write until they commit. The DDL is a frozen copy of what ``models.py``
declared when this migration was written; the rollup is filled from the existing predictions,
and building the indexes over a large table blocks writes to it meanwhile (create them first
with ``CREATE INDEX CONCURRENTLY`` on a busy production table: this migration then skips them).
"""

SCHEMA = """
DROP INDEX "predictions_endpoint_id";
DROP INDEX "predictions_model_version_id";
CREATE INDEX IF NOT EXISTS "predictions_endpoint_id_created_at" ON "predictions" ("endpoint_id", "created_at")
    INCLUDE ("model_version_id", "status", "latency", "confidence");
CREATE INDEX IF NOT EXISTS "predictions_model_version_id_created_at" ON "predictions" ("model_version_id", "created_at")
    INCLUDE ("endpoint_id", "status", "latency", "confidence");

CREATE TABLE "prediction_hourly_rollups" (
    "endpoint_id" UUID NOT NULL,
    "model_version_id" UUID NOT NULL,
    "status" TEXT NOT NULL,
    "hour" TIMESTAMPTZ NOT NULL,
    "row_count" BIGINT NOT NULL,
    "latency_sum" BIGINT NOT NULL,
    "latency_min" INTEGER NOT NULL,
    "latency_max" INTEGER NOT NULL,
    "confidence_count" BIGINT NOT NULL,
    "confidence_sum" DOUBLE PRECISION NOT NULL,
    "confidence_min" DOUBLE PRECISION,
    "confidence_max" DOUBLE PRECISION,
    PRIMARY KEY ("endpoint_id", "hour", "model_version_id", "status")
);

CREATE INDEX "prediction_hourly_rollups_model_version_id_hour" ON "prediction_hourly_rollups" ("model_version_id", "hour");
"""

# The totals of a set of prediction rows ``{rows}`` per rollup group, in the order of the key.
TOTALS = """
SELECT endpoint_id, date_trunc('hour', created_at, 'UTC') AS hour, model_version_id, status,
       count(*) AS row_count, sum(latency) AS latency_sum, min(latency) AS latency_min,
       max(latency) AS latency_max, count(confidence) AS confidence_count,
       coalesce(sum(confidence), 0) AS confidence_sum, min(confidence) AS confidence_min,
       max(confidence) AS confidence_max
  FROM {rows}
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4
"""

# Adds the totals of ``{rows}`` to their groups.
ADD = f"""
INSERT INTO prediction_hourly_rollups AS r (
    endpoint_id, hour, model_version_id, status, row_count, latency_sum, latency_min, latency_max,
    confidence_count, confidence_sum, confidence_min, confidence_max)
{TOTALS}
ON CONFLICT (endpoint_id, hour, model_version_id, status) DO UPDATE SET
    row_count = r.row_count + excluded.row_count,
    latency_sum = r.latency_sum + excluded.latency_sum,
    latency_min = least(r.latency_min, excluded.latency_min),
    latency_max = greatest(r.latency_max, excluded.latency_max),
    confidence_count = r.confidence_count + excluded.confidence_count,
    confidence_sum = r.confidence_sum + excluded.confidence_sum,
    confidence_min = least(r.confidence_min, excluded.confidence_min),
    confidence_max = greatest(r.confidence_max, excluded.confidence_max)
"""

# The rollup columns of a prediction, to tell the rows an update really moved or changed.
ROLLED_UP = "id, endpoint_id, model_version_id, status, created_at, latency, confidence"

# The groups the rows ``{rows}`` belonged to.
GROUPS = "SELECT DISTINCT endpoint_id, date_trunc('hour', created_at, 'UTC'), model_version_id, status FROM {rows}"

# Locks the rollup rows of the groups ``{rows}`` left, in key order.
LOCK = f"""
PERFORM 1 FROM prediction_hourly_rollups r
  WHERE (r.endpoint_id, r.hour, r.model_version_id, r.status) IN ({GROUPS})
  ORDER BY r.endpoint_id, r.hour, r.model_version_id, r.status
  FOR UPDATE;
"""

# Recomputes the groups ``{rows}`` left from the predictions now in them; empty groups go.
RECOMPUTE = f"""
WITH fresh AS (
    SELECT g.endpoint_id, g.hour, g.model_version_id, g.status, t.*
      FROM ({GROUPS}) AS g (endpoint_id, hour, model_version_id, status)
     CROSS JOIN LATERAL (
        SELECT count(*) AS row_count, coalesce(sum(p.latency), 0) AS latency_sum,
               min(p.latency) AS latency_min, max(p.latency) AS latency_max,
               count(p.confidence) AS confidence_count, coalesce(sum(p.confidence), 0) AS confidence_sum,
               min(p.confidence) AS confidence_min, max(p.confidence) AS confidence_max
          FROM predictions p
         WHERE p.endpoint_id = g.endpoint_id AND p.created_at >= g.hour
           AND p.created_at < g.hour + interval '1 hour'
           AND p.model_version_id = g.model_version_id AND p.status = g.status
    ) AS t
), emptied AS (
    DELETE FROM prediction_hourly_rollups r USING fresh f
     WHERE (r.endpoint_id, r.hour, r.model_version_id, r.status)
         = (f.endpoint_id, f.hour, f.model_version_id, f.status)
       AND f.row_count = 0
)
UPDATE prediction_hourly_rollups r SET
    row_count = f.row_count, latency_sum = f.latency_sum,
    latency_min = f.latency_min, latency_max = f.latency_max,
    confidence_count = f.confidence_count, confidence_sum = f.confidence_sum,
    confidence_min = f.confidence_min, confidence_max = f.confidence_max
  FROM fresh f
 WHERE (r.endpoint_id, r.hour, r.model_version_id, r.status)
     = (f.endpoint_id, f.hour, f.model_version_id, f.status)
   AND f.row_count > 0;
"""

# Rows an update took out of their group or changed, and the rows it put in their place.
REMOVED_ROWS = f"SELECT {ROLLED_UP} FROM old_rows EXCEPT ALL SELECT {ROLLED_UP} FROM new_rows"
ADDED_ROWS = f"SELECT {ROLLED_UP} FROM new_rows EXCEPT ALL SELECT {ROLLED_UP} FROM old_rows"
REMOVED = f"({REMOVED_ROWS}) AS removed"
ADDED = f"({ADDED_ROWS}) AS added"
# Both: an update locks every group it touches at once, in key order, so that two updates moving
# rows between the same groups in opposite directions wait for each other instead of deadlocking.
CHANGED = f"(({REMOVED_ROWS}) UNION ALL ({ADDED_ROWS})) AS changed"
# Added rows in groups that the recompute of the removed rows' groups does not already cover.
ADDED_ELSEWHERE = f"""(
    SELECT * FROM {ADDED}
     WHERE (endpoint_id, date_trunc('hour', created_at, 'UTC'), model_version_id, status)
       NOT IN ({GROUPS.format(rows=REMOVED)})
) AS added_elsewhere"""

TRIGGERS = f"""
CREATE FUNCTION prediction_rollups_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {ADD.format(rows="new_rows")};
    RETURN NULL;
END $$;

CREATE FUNCTION prediction_rollups_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {LOCK.format(rows=CHANGED)}
    {RECOMPUTE.format(rows=REMOVED)}
    {ADD.format(rows=ADDED_ELSEWHERE)};
    RETURN NULL;
END $$;

CREATE FUNCTION prediction_rollups_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {LOCK.format(rows="old_rows")}
    {RECOMPUTE.format(rows="old_rows")}
    RETURN NULL;
END $$;

CREATE FUNCTION prediction_rollups_after_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE prediction_hourly_rollups;
    RETURN NULL;
END $$;

CREATE TRIGGER prediction_rollups_after_insert AFTER INSERT ON predictions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION prediction_rollups_after_insert();
CREATE TRIGGER prediction_rollups_after_update AFTER UPDATE ON predictions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_rollups_after_update();
CREATE TRIGGER prediction_rollups_after_delete AFTER DELETE ON predictions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION prediction_rollups_after_delete();
CREATE TRIGGER prediction_rollups_after_truncate AFTER TRUNCATE ON predictions
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_rollups_after_truncate();
"""

BACKFILL = ADD.format(rows="predictions")

DOWN = """
DROP TRIGGER prediction_rollups_after_insert ON predictions;
DROP TRIGGER prediction_rollups_after_update ON predictions;
DROP TRIGGER prediction_rollups_after_delete ON predictions;
DROP TRIGGER prediction_rollups_after_truncate ON predictions;
DROP FUNCTION prediction_rollups_after_insert(), prediction_rollups_after_update(),
    prediction_rollups_after_delete(), prediction_rollups_after_truncate();
DROP TABLE "prediction_hourly_rollups";
DROP INDEX "predictions_endpoint_id_created_at";
DROP INDEX "predictions_model_version_id_created_at";
CREATE INDEX "predictions_endpoint_id" ON "predictions" ("endpoint_id");
CREATE INDEX "predictions_model_version_id" ON "predictions" ("model_version_id");
"""


def up(migrator, db):
    db.execute_sql(SCHEMA)
    db.execute_sql(TRIGGERS)
    db.execute_sql(BACKFILL)


def down(migrator, db):
    db.execute_sql(DOWN)
