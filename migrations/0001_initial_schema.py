"""Create the pgvector extension and the whole schema of the 13 resources.

The DDL is a frozen copy of what ``models.py`` declared when this migration was
written: later migrations change the schema, this one never does.
``tests/test_migrations.py`` proves that all migrations together build exactly
what ``models.py`` declares now.
"""

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE "cloud_run_services" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "region" TEXT NOT NULL CHECK (region <> ''),
    "project_id" TEXT NOT NULL CHECK (project_id <> ''),
    "image" TEXT NOT NULL CHECK (image <> ''),
    "url" TEXT,
    "status" TEXT NOT NULL CHECK (status IN ('CREATING', 'READY', 'FAILED', 'DELETED')),
    "cpu" TEXT,
    "memory" TEXT,
    "min_instances" INTEGER NOT NULL CHECK (min_instances >= 0),
    "max_instances" INTEGER NOT NULL CHECK (max_instances >= 0),
    "env" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "created_by" TEXT
);

CREATE INDEX "cloud_run_services_status" ON "cloud_run_services" ("status");

CREATE UNIQUE INDEX "cloud_run_services_project_id_region_name" ON "cloud_run_services" ("project_id", "region", "name");

CREATE TABLE "workflows" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "description" TEXT,
    "status" TEXT NOT NULL CHECK (status IN ('DRAFT', 'ACTIVE', 'PAUSED', 'ARCHIVED')),
    "created_by" TEXT NOT NULL CHECK (created_by <> ''),
    "config" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "n8n_workflow_id" TEXT,
    "embedding" vector(384)
);

CREATE INDEX "workflows_status" ON "workflows" ("status");

CREATE INDEX "workflows_created_by" ON "workflows" ("created_by");

CREATE INDEX "workflows_created_at" ON "workflows" ("created_at");

CREATE TABLE "datasets" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "workflow_id" UUID NOT NULL,
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "description" TEXT,
    "type" TEXT NOT NULL CHECK (type IN ('IMAGE', 'TEXT', 'TABULAR', 'AUDIO', 'VIDEO', 'TIME_SERIES', 'OTHER')),
    "size" BIGINT NOT NULL CHECK (size >= 0),
    "storage_path" TEXT NOT NULL CHECK (storage_path <> ''),
    "format" TEXT NOT NULL,
    "metadata" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "embedding" vector(384),
    FOREIGN KEY ("workflow_id") REFERENCES "workflows" ("id") ON DELETE CASCADE
);

CREATE INDEX "datasets_workflow_id" ON "datasets" ("workflow_id");

CREATE INDEX "datasets_type" ON "datasets" ("type");

CREATE UNIQUE INDEX "datasets_workflow_id_name" ON "datasets" ("workflow_id", "name");

CREATE INDEX "datasets_created_at" ON "datasets" ("created_at");

CREATE TABLE "dataset_versions" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "dataset_id" UUID NOT NULL,
    "version" INTEGER NOT NULL CHECK (version >= 1),
    "storage_path" TEXT NOT NULL CHECK (storage_path <> ''),
    "size" BIGINT NOT NULL CHECK (size >= 0),
    "checksum" TEXT NOT NULL,
    "metadata" JSONB NOT NULL DEFAULT '{}'::jsonb,
    FOREIGN KEY ("dataset_id") REFERENCES "datasets" ("id") ON DELETE CASCADE
);

CREATE INDEX "dataset_versions_dataset_id" ON "dataset_versions" ("dataset_id");

CREATE UNIQUE INDEX "dataset_versions_dataset_id_version" ON "dataset_versions" ("dataset_id", "version");

CREATE TABLE "models" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "workflow_id" UUID NOT NULL,
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "description" TEXT,
    "type" TEXT NOT NULL CHECK (type IN ('CLASSIFICATION', 'REGRESSION', 'CLUSTERING', 'NLP', 'COMPUTER_VISION', 'RECOMMENDATION', 'TIME_SERIES', 'GENERATIVE', 'OTHER')),
    "framework" TEXT NOT NULL CHECK (framework IN ('TENSORFLOW', 'PYTORCH', 'SKLEARN', 'XGBOOST', 'JAX', 'ONNX', 'CUSTOM')),
    "embedding" vector(384),
    FOREIGN KEY ("workflow_id") REFERENCES "workflows" ("id") ON DELETE CASCADE
);

CREATE INDEX "models_workflow_id" ON "models" ("workflow_id");

CREATE INDEX "models_type" ON "models" ("type");

CREATE INDEX "models_framework" ON "models" ("framework");

CREATE UNIQUE INDEX "models_workflow_id_name" ON "models" ("workflow_id", "name");

CREATE TABLE "endpoints" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "model_id" UUID NOT NULL,
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "description" TEXT,
    "status" TEXT NOT NULL CHECK (status IN ('CREATING', 'READY', 'UPDATING', 'FAILED')),
    "url" TEXT,
    "vertex_endpoint_id" TEXT,
    FOREIGN KEY ("model_id") REFERENCES "models" ("id") ON DELETE CASCADE
);

CREATE INDEX "endpoints_model_id" ON "endpoints" ("model_id");

CREATE INDEX "endpoints_status" ON "endpoints" ("status");

CREATE UNIQUE INDEX "endpoints_model_id_name" ON "endpoints" ("model_id", "name");

CREATE TABLE "experiments" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "workflow_id" UUID NOT NULL,
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "description" TEXT,
    "status" TEXT NOT NULL CHECK (status IN ('DRAFT', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    "hyperparameters" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "objective_metric" TEXT,
    "created_by" TEXT,
    FOREIGN KEY ("workflow_id") REFERENCES "workflows" ("id") ON DELETE CASCADE
);

CREATE INDEX "experiments_workflow_id" ON "experiments" ("workflow_id");

CREATE INDEX "experiments_status" ON "experiments" ("status");

CREATE UNIQUE INDEX "experiments_workflow_id_name" ON "experiments" ("workflow_id", "name");

CREATE INDEX "experiments_created_at" ON "experiments" ("created_at");

CREATE TABLE "training_jobs" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "experiment_id" UUID NOT NULL,
    "dataset_id" UUID NOT NULL,
    "status" TEXT NOT NULL CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    "hyperparameters" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "metrics" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "machine_type" TEXT,
    "accelerator_type" TEXT,
    "accelerator_count" INTEGER NOT NULL CHECK (accelerator_count >= 0),
    "vertex_job_id" TEXT,
    "start_time" TIMESTAMPTZ,
    "end_time" TIMESTAMPTZ,
    "error_message" TEXT,
    FOREIGN KEY ("experiment_id") REFERENCES "experiments" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("dataset_id") REFERENCES "datasets" ("id") ON DELETE CASCADE
);

CREATE INDEX "training_jobs_experiment_id" ON "training_jobs" ("experiment_id");

CREATE INDEX "training_jobs_dataset_id" ON "training_jobs" ("dataset_id");

CREATE INDEX "training_jobs_status" ON "training_jobs" ("status");

CREATE INDEX "training_jobs_created_at" ON "training_jobs" ("created_at");

CREATE TABLE "model_versions" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "model_id" UUID NOT NULL,
    "version" INTEGER NOT NULL CHECK (version >= 1),
    "storage_path" TEXT NOT NULL,
    "artifact_uri" TEXT NOT NULL,
    "size" BIGINT NOT NULL CHECK (size >= 0),
    "checksum" TEXT NOT NULL,
    "metrics" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "status" TEXT NOT NULL CHECK (status IN ('REGISTERED', 'TRAINING', 'TRAINED', 'VALIDATED', 'DEPLOYED', 'DEPRECATED', 'FAILED')),
    "training_duration" BIGINT CHECK (training_duration >= 0),
    "training_job_id" UUID,
    FOREIGN KEY ("model_id") REFERENCES "models" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("training_job_id") REFERENCES "training_jobs" ("id") ON DELETE SET NULL
);

CREATE INDEX "model_versions_model_id" ON "model_versions" ("model_id");

CREATE INDEX "model_versions_status" ON "model_versions" ("status");

CREATE INDEX "model_versions_training_job_id" ON "model_versions" ("training_job_id");

CREATE UNIQUE INDEX "model_versions_model_id_version" ON "model_versions" ("model_id", "version");

CREATE TABLE "deployments" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "endpoint_id" UUID NOT NULL,
    "model_version_id" UUID NOT NULL,
    "traffic_split" INTEGER NOT NULL CHECK (traffic_split BETWEEN 0 AND 100),
    "min_replicas" INTEGER NOT NULL CHECK (min_replicas >= 1),
    "max_replicas" INTEGER NOT NULL,
    "machine_type" TEXT NOT NULL CHECK (machine_type <> ''),
    "status" TEXT NOT NULL CHECK (status IN ('PENDING', 'DEPLOYING', 'DEPLOYED', 'FAILED', 'UNDEPLOYED')),
    "deployed_at" TIMESTAMPTZ,
    FOREIGN KEY ("endpoint_id") REFERENCES "endpoints" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("model_version_id") REFERENCES "model_versions" ("id") ON DELETE CASCADE,
    CONSTRAINT "deployments_max_replicas_check" CHECK (max_replicas >= min_replicas)
);

CREATE INDEX "deployments_endpoint_id" ON "deployments" ("endpoint_id");

CREATE INDEX "deployments_model_version_id" ON "deployments" ("model_version_id");

CREATE INDEX "deployments_status" ON "deployments" ("status");

CREATE TABLE "idempotency_keys" (
    "request_id" UUID NOT NULL PRIMARY KEY,
    "method" TEXT NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "resource_id" UUID NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX "idempotencykey_created_at" ON "idempotency_keys" ("created_at");

CREATE TABLE "pattern_recognition_jobs" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "name" TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    "pattern_type" TEXT NOT NULL CHECK (pattern_type IN ('ANOMALY', 'CLUSTER', 'TREND', 'SEQUENCE', 'CORRELATION', 'OTHER')),
    "status" TEXT NOT NULL CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    "source_uri" TEXT,
    "config" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "results" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "patterns_found" INTEGER NOT NULL CHECK (patterns_found >= 0),
    "created_by" TEXT,
    "start_time" TIMESTAMPTZ,
    "end_time" TIMESTAMPTZ,
    "error_message" TEXT,
    "embedding" vector(384)
);

CREATE INDEX "pattern_recognition_jobs_pattern_type" ON "pattern_recognition_jobs" ("pattern_type");

CREATE INDEX "pattern_recognition_jobs_status" ON "pattern_recognition_jobs" ("status");

CREATE INDEX "pattern_recognition_jobs_created_at" ON "pattern_recognition_jobs" ("created_at");

CREATE TABLE "predictions" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "endpoint_id" UUID NOT NULL,
    "model_version_id" UUID NOT NULL,
    "input" JSONB NOT NULL,
    "output" JSONB,
    "latency" INTEGER NOT NULL CHECK (latency >= 0),
    "confidence" DOUBLE PRECISION CHECK (confidence BETWEEN 0 AND 1),
    "status" TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    "error_message" TEXT,
    "created_by" TEXT,
    "completed_at" TIMESTAMPTZ,
    "embedding" vector(384),
    FOREIGN KEY ("endpoint_id") REFERENCES "endpoints" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("model_version_id") REFERENCES "model_versions" ("id") ON DELETE CASCADE
);

CREATE INDEX "predictions_endpoint_id" ON "predictions" ("endpoint_id");

CREATE INDEX "predictions_model_version_id" ON "predictions" ("model_version_id");

CREATE INDEX "predictions_status" ON "predictions" ("status");

CREATE INDEX "predictions_created_at" ON "predictions" ("created_at");

CREATE TABLE "service_deployments" (
    "id" UUID NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "updated_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "cloud_run_service_id" UUID NOT NULL,
    "revision" TEXT NOT NULL CHECK (revision <> ''),
    "image" TEXT NOT NULL CHECK (image <> ''),
    "status" TEXT NOT NULL CHECK (status IN ('PENDING', 'DEPLOYING', 'ACTIVE', 'FAILED', 'ROLLED_BACK')),
    "traffic_percent" INTEGER NOT NULL CHECK (traffic_percent BETWEEN 0 AND 100),
    "config" JSONB NOT NULL DEFAULT '{}'::jsonb,
    "deployed_at" TIMESTAMPTZ,
    FOREIGN KEY ("cloud_run_service_id") REFERENCES "cloud_run_services" ("id") ON DELETE CASCADE
);

CREATE INDEX "service_deployments_cloud_run_service_id" ON "service_deployments" ("cloud_run_service_id");

CREATE INDEX "service_deployments_status" ON "service_deployments" ("status");

CREATE UNIQUE INDEX "service_deployments_cloud_run_service_id_revision" ON "service_deployments" ("cloud_run_service_id", "revision");

CREATE TABLE "service_settings" (
    "key" TEXT NOT NULL PRIMARY KEY,
    "value" TEXT NOT NULL
);

-- Page tokens are signed with a key every replica shares; it lives here so
-- that a restart or a second replica accepts tokens the first one issued.
INSERT INTO "service_settings" ("key", "value")
VALUES ('page_token_key', md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text));
"""


def up(migrator, db):
    db.execute_sql(SCHEMA)


def down(migrator, db):
    db.execute_sql('DROP TABLE "service_settings", "service_deployments", "predictions", "pattern_recognition_jobs", "idempotency_keys", "deployments", "model_versions", "training_jobs", "experiments", "endpoints", "models", "dataset_versions", "datasets", "workflows", "cloud_run_services"; DROP EXTENSION IF EXISTS vector;')
