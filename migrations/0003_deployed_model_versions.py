"""Remember the status a model version had before the service marked it DEPLOYED.

A model version is DEPLOYED exactly while one of its deployments is, and then
returns to its previous status (``server/lifecycle.py``). One row per DEPLOYED
version keeps that previous status. The DDL is a frozen copy of what
``models.DeployedModelVersion`` declared when this migration was written.

Versions that were already DEPLOYED before this migration have no row; they
return to REGISTERED when their last deployment stops being DEPLOYED.
"""

SCHEMA = """
CREATE TABLE "deployed_model_versions" (
    "model_version_id" UUID NOT NULL PRIMARY KEY,
    "status_before" TEXT NOT NULL CHECK (status_before IN ('REGISTERED', 'TRAINING', 'TRAINED', 'VALIDATED', 'DEPLOYED', 'DEPRECATED', 'FAILED')),
    "since" TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY ("model_version_id") REFERENCES "model_versions" ("id") ON DELETE CASCADE
);
"""


def up(migrator, db):
    db.execute_sql(SCHEMA)


def down(migrator, db):
    db.execute_sql('DROP TABLE "deployed_model_versions"')
