"""The 13 resources of the ML metadata service as Peewee models.

This module is the single declaration of the schema: the migrations in
``migrations/`` must build exactly what is declared here (``tests/test_migrations.py``
compares the two), and the gRPC layer in ``server/`` reads column types and
relations from it.

    from models import database, Dataset
    database.init("versatil", host="/tmp/pg")
    with database.connection_context():
        Dataset.select().where(Dataset.type == DatasetType.IMAGE)

Conventions shared by every table (see ../shared/SCHEMA.md):

* ``id`` is a native ``uuid`` primary key assigned by the service (UUIDv7).
* ``created_at`` / ``updated_at`` are ``timestamptz`` set by the service; the
  database defaults them too, so that rows inserted by hand stay valid.
* Enums are stored as their short name in ``text`` guarded by a CHECK.
* Every parent foreign key cascades on delete, except
  ``ModelVersion.training_job`` which is set to NULL.
"""
from __future__ import annotations

import datetime
from enum import StrEnum
from collections.abc import Callable
from typing import Any

from peewee import (
    SQL,
    BigIntegerField,
    Check,
    CompositeKey,
    EnclosedNodeList,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    ModelIndex,
    NodeList,
    TextField,
    UUIDField,
)
from pgvector.peewee import VectorField
from psycopg2.extensions import TRANSACTION_STATUS_UNKNOWN
from playhouse.postgres_ext import BinaryJSONField, DateTimeTZField, PooledPostgresqlExtDatabase

EMBEDDING_DIMENSIONS = 384
NAME_MAX_LENGTH = 200

class ServiceDatabase(PooledPostgresqlExtDatabase):
    """Peewee's PostgreSQL pool, without a round trip on every check-out.

    Peewee pings a pooled connection with ``SELECT 1`` each time it hands it
    out, which costs as much as a primary-key read. Here a connection is
    discarded once psycopg2 marks it broken, and the service drops the idle
    ones when the database goes away (``server.rpc.dispatch``).
    """

    # Called right after a connection is handed out (outside the pool's lock); the service
    # sets it to make the connection run as the caller of the RPC (``server.ops.database``).
    # A connection it fails on is closed, never used half set up.
    on_checkout: Callable[[], None] | None = None

    def _is_closed(self, conn: Any) -> bool:
        return bool(conn.closed) or conn.get_transaction_status() == TRANSACTION_STATUS_UNKNOWN

    def connect(self, reuse_if_open: bool = False) -> bool:
        opened = super().connect(reuse_if_open)
        if opened and self.on_checkout is not None:
            try:
                self.on_checkout()
            except BaseException:
                self.manual_close()  # Out of the pool for good.
                raise
        return opened


# Bound at start-up by ``server.ops.database.connect``; ``autoconnect=False`` makes
# every use of a connection outside ``connection_context()`` an error, so a
# connection can never leak out of an RPC.
database = ServiceDatabase(None, autoconnect=False)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class EnumField(TextField):
    """A ``text`` column holding a ``StrEnum`` member's name, guarded by a CHECK."""

    def __init__(self, enum: type[StrEnum], **kwargs: Any) -> None:
        self.enum = enum
        super().__init__(**kwargs)

    def ddl(self, ctx: Any) -> NodeList:
        allowed = ", ".join(f"'{member.value}'" for member in self.enum)
        return NodeList((super().ddl(ctx), Check(f"{self.column_name} IN ({allowed})")))


def name_field(**kwargs: Any) -> TextField:
    return TextField(
        constraints=[Check(f"char_length(name) BETWEEN 1 AND {NAME_MAX_LENGTH}")], **kwargs
    )


def required_text(column: str) -> TextField:
    """A text column that must not be empty (SCHEMA.md's "required" strings)."""
    return TextField(constraints=[Check(f"{column} <> ''")])


def at_least(column: str, minimum: int, field: type = IntegerField, **kwargs: Any) -> Any:
    return field(constraints=[Check(f"{column} >= {minimum}")], **kwargs)


def percentage(column: str) -> IntegerField:
    return IntegerField(default=0, constraints=[Check(f"{column} BETWEEN 0 AND 100")])


def json_object(**kwargs: Any) -> BinaryJSONField:
    return json_field(default=dict, constraints=[SQL("DEFAULT '{}'::jsonb")], **kwargs)


def json_field(**kwargs: Any) -> BinaryJSONField:
    # Peewee gives jsonb a GIN index by default; filters read keys with ->>,
    # which GIN does not serve, so the index would only slow ingestion down.
    return BinaryJSONField(index=False, **kwargs)


def embedding() -> VectorField:
    return VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True)


# The distance metrics Search<R>s serves, each with pgvector's operator class; every
# ``embedding`` column has one HNSW index per metric (see ``index_embeddings``).
VECTOR_OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "inner_product": "vector_ip_ops"}
# HNSW build parameters. pgvector's default ef_construction (64) builds a graph that finds only
# about 0.8 of the true 10 nearest on clustered 384-dimension embeddings, whatever ef_search;
# 200 finds about 0.98 at ef_search 100, for about 1.5 times the build and insert time.
HNSW_BUILD = {"m": 16, "ef_construction": 200}


class HnswIndex(ModelIndex):
    """An HNSW index with build parameters: ``... USING hnsw (embedding <opclass>) WITH (...)``."""

    def __init__(self, model: type[Model], opclass: str, name: str, parameters: dict[str, int]) -> None:
        super().__init__(model, (SQL(f"embedding {opclass}"),), name=name, using="hnsw")
        self.parameters = parameters

    def __sql__(self, ctx: Any) -> Any:
        super().__sql__(ctx)  # Peewee's Index has no WITH clause; it goes last.
        return ctx.literal(" WITH (" + ", ".join(f"{k} = {v}" for k, v in self.parameters.items()) + ")")


def index_embeddings(*embedded: type[Model]) -> None:
    """HNSW indexes on ``embedding`` for every served metric (migration 0002 creates them)."""
    for model in embedded:
        for metric, opclass in VECTOR_OPCLASSES.items():
            name = f"{model._meta.table_name}_embedding_{metric}"
            model.add_index(HnswIndex(model, opclass, name, HNSW_BUILD))


def parent(model: type[Model] | str, backref: str, **kwargs: Any) -> ForeignKeyField:
    kwargs.setdefault("on_delete", "CASCADE")
    kwargs.setdefault("index", True)
    return ForeignKeyField(model, backref=backref, **kwargs)


class CoveringIndex(ModelIndex):
    """An index on ``keys`` that also stores ``include`` (PostgreSQL's INCLUDE): a query reading
    only these columns is answered from the index alone, an index-only scan.

    Peewee's indexes have no INCLUDE; the stored columns are kept as indexed expressions after the
    keys, where PostgreSQL lists them too, so that Peewee's schema diff sees the same index.
    """

    def __init__(self, model: type[Model], keys: tuple[str, ...], include: tuple[str, ...]) -> None:
        fields = [model._meta.combined[name] for name in (*keys, *include)]
        super().__init__(model, fields, name=f"{model._meta.table_name}_{'_'.join(keys)}")
        self._key_count = len(keys)

    def __sql__(self, ctx: Any) -> Any:
        keys = self.clone()
        keys._expressions = self._expressions[: self._key_count]
        super(CoveringIndex, keys).__sql__(ctx)
        return ctx.literal(" INCLUDE ").sql(EnclosedNodeList(self._expressions[self._key_count :]))


class WorkflowStatus(StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ARCHIVED = "ARCHIVED"


class DatasetType(StrEnum):
    IMAGE = "IMAGE"
    TEXT = "TEXT"
    TABULAR = "TABULAR"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    TIME_SERIES = "TIME_SERIES"
    OTHER = "OTHER"


class ModelType(StrEnum):
    CLASSIFICATION = "CLASSIFICATION"
    REGRESSION = "REGRESSION"
    CLUSTERING = "CLUSTERING"
    NLP = "NLP"
    COMPUTER_VISION = "COMPUTER_VISION"
    RECOMMENDATION = "RECOMMENDATION"
    TIME_SERIES = "TIME_SERIES"
    GENERATIVE = "GENERATIVE"
    OTHER = "OTHER"


class ModelFramework(StrEnum):
    TENSORFLOW = "TENSORFLOW"
    PYTORCH = "PYTORCH"
    SKLEARN = "SKLEARN"
    XGBOOST = "XGBOOST"
    JAX = "JAX"
    ONNX = "ONNX"
    CUSTOM = "CUSTOM"


class ModelVersionStatus(StrEnum):
    REGISTERED = "REGISTERED"
    TRAINING = "TRAINING"
    TRAINED = "TRAINED"
    VALIDATED = "VALIDATED"
    DEPLOYED = "DEPLOYED"
    DEPRECATED = "DEPRECATED"
    FAILED = "FAILED"


class ExperimentStatus(StrEnum):
    DRAFT = "DRAFT"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TrainingJobStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class EndpointStatus(StrEnum):
    CREATING = "CREATING"
    READY = "READY"
    UPDATING = "UPDATING"
    FAILED = "FAILED"


class DeploymentStatus(StrEnum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    DEPLOYED = "DEPLOYED"
    FAILED = "FAILED"
    UNDEPLOYED = "UNDEPLOYED"


class PredictionStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class PatternType(StrEnum):
    ANOMALY = "ANOMALY"
    CLUSTER = "CLUSTER"
    TREND = "TREND"
    SEQUENCE = "SEQUENCE"
    CORRELATION = "CORRELATION"
    OTHER = "OTHER"


class CloudRunServiceStatus(StrEnum):
    CREATING = "CREATING"
    READY = "READY"
    FAILED = "FAILED"
    DELETED = "DELETED"


class ServiceDeploymentStatus(StrEnum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


class BaseModel(Model):
    id = UUIDField(primary_key=True)
    created_at = DateTimeTZField(default=utc_now, constraints=[SQL("DEFAULT now()")])
    updated_at = DateTimeTZField(default=utc_now, constraints=[SQL("DEFAULT now()")])

    class Meta:
        database = database
        legacy_table_names = False


class Workflow(BaseModel):
    name = name_field()
    description = TextField(null=True)
    status = EnumField(WorkflowStatus, default=WorkflowStatus.DRAFT, index=True)
    created_by = required_text("created_by")
    config = json_object()
    n8n_workflow_id = TextField(null=True)
    embedding = embedding()

    class Meta:
        table_name = "workflows"
        indexes = (
            (("created_by",), False),
            (("created_at",), False),
        )


class Dataset(BaseModel):
    workflow = parent(Workflow, "datasets")
    name = name_field()
    description = TextField(null=True)
    type = EnumField(DatasetType, index=True)
    size = at_least("size", 0, BigIntegerField, default=0)
    storage_path = required_text("storage_path")
    format = TextField(default="")
    metadata = json_object()
    embedding = embedding()

    class Meta:
        table_name = "datasets"
        indexes = (
            (("workflow", "name"), True),
            (("created_at",), False),
        )


class DatasetVersion(BaseModel):
    dataset = parent(Dataset, "versions")
    version = at_least("version", 1)
    storage_path = required_text("storage_path")
    size = at_least("size", 0, BigIntegerField, default=0)
    checksum = TextField(default="")
    metadata = json_object()

    class Meta:
        table_name = "dataset_versions"
        indexes = ((("dataset", "version"), True),)


class MLModel(BaseModel):
    """A model definition; named MLModel because ``Model`` is Peewee's base class."""

    workflow = parent(Workflow, "models")
    name = name_field()
    description = TextField(null=True)
    type = EnumField(ModelType, index=True)
    framework = EnumField(ModelFramework, index=True)
    embedding = embedding()

    class Meta:
        table_name = "models"
        indexes = ((("workflow", "name"), True),)


class Experiment(BaseModel):
    workflow = parent(Workflow, "experiments")
    name = name_field()
    description = TextField(null=True)
    status = EnumField(ExperimentStatus, default=ExperimentStatus.DRAFT, index=True)
    hyperparameters = json_object()
    objective_metric = TextField(null=True)
    created_by = TextField(null=True)

    class Meta:
        table_name = "experiments"
        indexes = (
            (("workflow", "name"), True),
            (("created_at",), False),
        )


class TrainingJob(BaseModel):
    experiment = parent(Experiment, "training_jobs")
    dataset = parent(Dataset, "training_jobs")
    status = EnumField(TrainingJobStatus, default=TrainingJobStatus.PENDING, index=True)
    hyperparameters = json_object()
    metrics = json_object()
    machine_type = TextField(null=True)
    accelerator_type = TextField(null=True)
    accelerator_count = at_least("accelerator_count", 0, default=0)
    vertex_job_id = TextField(null=True)
    start_time = DateTimeTZField(null=True)
    end_time = DateTimeTZField(null=True)
    error_message = TextField(null=True)

    class Meta:
        table_name = "training_jobs"
        indexes = ((("created_at",), False),)


class ModelVersion(BaseModel):
    model = parent(MLModel, "versions")
    version = at_least("version", 1)
    storage_path = TextField(default="")
    artifact_uri = TextField(default="")
    size = at_least("size", 0, BigIntegerField, default=0)
    checksum = TextField(default="")
    metrics = json_object()
    status = EnumField(ModelVersionStatus, default=ModelVersionStatus.REGISTERED, index=True)
    training_duration = at_least("training_duration", 0, BigIntegerField, null=True)
    training_job = parent(TrainingJob, "model_versions", null=True, on_delete="SET NULL")

    class Meta:
        table_name = "model_versions"
        indexes = ((("model", "version"), True),)


class Endpoint(BaseModel):
    model = parent(MLModel, "endpoints")
    name = name_field()
    description = TextField(null=True)
    status = EnumField(EndpointStatus, default=EndpointStatus.CREATING, index=True)
    url = TextField(null=True)
    vertex_endpoint_id = TextField(null=True)

    class Meta:
        table_name = "endpoints"
        indexes = ((("model", "name"), True),)


class Deployment(BaseModel):
    endpoint = parent(Endpoint, "deployments")
    model_version = parent(ModelVersion, "deployments")
    traffic_split = percentage("traffic_split")
    min_replicas = at_least("min_replicas", 1, default=1)
    max_replicas = IntegerField(default=1)
    machine_type = required_text("machine_type")
    status = EnumField(DeploymentStatus, default=DeploymentStatus.PENDING, index=True)
    deployed_at = DateTimeTZField(null=True)

    class Meta:
        table_name = "deployments"
        constraints = [Check("max_replicas >= min_replicas", "deployments_max_replicas_check")]


class Prediction(BaseModel):
    # Both keys lead a covering index below, which serves their lookups (and cascades) too.
    endpoint = parent(Endpoint, "predictions", index=False)
    model_version = parent(ModelVersion, "predictions", index=False)
    input = json_field()
    output = json_field(null=True)
    latency = at_least("latency", 0, default=0)
    confidence = DoubleField(null=True, constraints=[Check("confidence BETWEEN 0 AND 1")])
    status = EnumField(PredictionStatus, default=PredictionStatus.PENDING, index=True)
    error_message = TextField(null=True)
    created_by = TextField(null=True)
    completed_at = DateTimeTZField(null=True)
    embedding = embedding()

    class Meta:
        table_name = "predictions"
        indexes = [(("created_at",), False)]


# Stats per endpoint or model version over a time range read only these two indexes.
Prediction.add_index(
    CoveringIndex(Prediction, ("endpoint_id", "created_at"), ("model_version_id", "status", "latency", "confidence"))
)
Prediction.add_index(
    CoveringIndex(Prediction, ("model_version_id", "created_at"), ("endpoint_id", "status", "latency", "confidence"))
)


class PatternRecognitionJob(BaseModel):
    name = name_field()
    pattern_type = EnumField(PatternType, index=True)
    status = EnumField(TrainingJobStatus, default=TrainingJobStatus.PENDING, index=True)
    source_uri = TextField(null=True)
    config = json_object()
    results = json_object()
    patterns_found = at_least("patterns_found", 0, default=0)
    created_by = TextField(null=True)
    start_time = DateTimeTZField(null=True)
    end_time = DateTimeTZField(null=True)
    error_message = TextField(null=True)
    embedding = embedding()

    class Meta:
        table_name = "pattern_recognition_jobs"
        indexes = ((("created_at",), False),)


class CloudRunService(BaseModel):
    name = name_field()
    region = required_text("region")
    project_id = required_text("project_id")
    image = required_text("image")
    url = TextField(null=True)
    status = EnumField(CloudRunServiceStatus, default=CloudRunServiceStatus.CREATING, index=True)
    cpu = TextField(null=True)
    memory = TextField(null=True)
    min_instances = at_least("min_instances", 0, default=0)
    max_instances = at_least("max_instances", 0, default=1)
    env = json_object()
    created_by = TextField(null=True)

    class Meta:
        table_name = "cloud_run_services"
        indexes = ((("project_id", "region", "name"), True),)


class ServiceDeployment(BaseModel):
    cloud_run_service = parent(CloudRunService, "deployments")
    revision = required_text("revision")
    image = required_text("image")
    status = EnumField(ServiceDeploymentStatus, default=ServiceDeploymentStatus.PENDING, index=True)
    traffic_percent = percentage("traffic_percent")
    config = json_object()
    deployed_at = DateTimeTZField(null=True)

    class Meta:
        table_name = "service_deployments"
        indexes = ((("cloud_run_service", "revision"), True),)


class IdempotencyKey(Model):
    """The first result of a Create that carried a ``request_id`` (AIP-155)."""

    request_id = UUIDField(primary_key=True)
    method = TextField()
    fingerprint = TextField()
    resource_id = UUIDField()
    created_at = DateTimeTZField(default=utc_now, constraints=[SQL("DEFAULT now()")], index=True)

    class Meta:
        database = database
        table_name = "idempotency_keys"


class PredictionHourlyRollup(Model):
    """Totals of the predictions of one endpoint, model version and status in one UTC hour.

    Triggers (migration 0004) keep every row exact inside the transaction of each insert, update
    and delete of ``predictions``, cascades included; a group without predictions has no row.
    ``server.stats`` answers the prediction stats it can from here instead of the raw rows.
    """

    endpoint_id = UUIDField()
    model_version_id = UUIDField()
    status = TextField()
    hour = DateTimeTZField()
    row_count = BigIntegerField()
    latency_sum = BigIntegerField()
    latency_min = IntegerField()
    latency_max = IntegerField()
    # Predictions with a confidence; confidence_sum is 0 when there are none.
    confidence_count = BigIntegerField()
    confidence_sum = DoubleField()
    confidence_min = DoubleField(null=True)
    confidence_max = DoubleField(null=True)

    class Meta:
        database = database
        table_name = "prediction_hourly_rollups"
        legacy_table_names = False
        primary_key = CompositeKey("endpoint_id", "hour", "model_version_id", "status")
        indexes = ((("model_version_id", "hour"), False),)


class ServiceSetting(Model):
    """Service-wide settings every replica must share, such as the page-token key."""

    key = TextField(primary_key=True)
    value = TextField()

    class Meta:
        database = database
        table_name = "service_settings"


class DeployedModelVersion(Model):
    """A model version the service marked DEPLOYED, with the status it returns to afterwards.

    ``ModelVersion.status`` DEPLOYED is kept by the service (``server/lifecycle.py``): this
    row exists exactly while the version is DEPLOYED. It lives beside ``model_versions``
    rather than as a column of it because every column of a resource is a field of its
    message, and this one is nobody's to read or write.
    """

    model_version = ForeignKeyField(ModelVersion, primary_key=True, on_delete="CASCADE", backref="+")
    status_before = EnumField(ModelVersionStatus)
    since = DateTimeTZField(default=utc_now, constraints=[SQL("DEFAULT now()")])

    class Meta:
        database = database
        table_name = "deployed_model_versions"


index_embeddings(Workflow, Dataset, MLModel, Prediction, PatternRecognitionJob)

RESOURCE_MODELS: tuple[type[BaseModel], ...] = (
    Workflow,
    Dataset,
    DatasetVersion,
    MLModel,
    ModelVersion,
    Experiment,
    TrainingJob,
    Endpoint,
    Deployment,
    Prediction,
    PatternRecognitionJob,
    CloudRunService,
    ServiceDeployment,
)
ALL_MODELS: tuple[type[Model], ...] = (
    *RESOURCE_MODELS, IdempotencyKey, ServiceSetting, DeployedModelVersion, PredictionHourlyRollup
)
