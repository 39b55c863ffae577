"""``make seed``: a realistic sample for trying the service out.

One workflow with two datasets (three versions each), a model with two
versions, an experiment with four training jobs, an endpoint with a
deployment, 3,000 predictions, a pattern-recognition job and a Cloud Run
service with two revisions. Every create carries a request id derived
from its place in the sample, so running the seed again changes nothing.
"""
from __future__ import annotations

import logging
import random
import uuid
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

import models
from server.config import Settings
from server.core.limits import Limits
from server.core.resource import PACKAGE, Catalog
from server.domain.catalog import build_catalog
from server.domain.secrets import KeyRing
from server.methods import standard
from server.ops import database as db
from server.ops import logs
from server.rpc.dispatch import service_of

SEED_NAMESPACE = uuid.UUID("0b6d8f3e-5d0a-4c1b-9a57-6f1f3f1c2a10")
PREDICTIONS = 3000
BATCH = 1000

log = logging.getLogger("versatil.seed")


def _message(type_name: str, /, **fields: Any) -> Message:
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.{type_name}")
    )(**fields)


def _create_request(catalog: Catalog, resource: str, key: str, **fields: Any) -> Message:
    return _message(
        f"Create{resource}Request",
        request_id=str(uuid.uuid5(SEED_NAMESPACE, f"{resource}/{key}")),
        **{catalog[resource].singular: _message(resource, **fields)},
    )


def seed(catalog: Catalog, limits: Limits) -> dict[str, int]:
    """Create the sample through the standard methods; the row count of every resource after."""
    for resource in catalog.values():
        service_of(resource)  # Loads the request messages into the pool.

    def create(resource: str, key: str, **fields: Any) -> Message:
        return standard.create(catalog[resource], _create_request(catalog, resource, key, **fields), limits)

    workflow = create(
        "Workflow", "workflow", name="Image classification pipeline", created_by="seed",
        status=2, description="End-to-end ML workflow",
        config={"nodes": [{"id": "dataset", "type": "dataset-loader"}, {"id": "train", "type": "trainer"}]},
    )
    datasets = [
        create(
            "Dataset", name, workflow_id=workflow.id, name=name, type=1, size=52_428_800,
            storage_path=f"gs://versatil-seed/{name}", format="tfrecord",
            versions=[
                _message("DatasetVersion", storage_path=f"gs://versatil-seed/{name}/v{v}",
                         size=52_428_800 + v, checksum=f"sha256:{name}{v}")
                for v in (1, 2, 3)
            ],
        )
        for name in ("cifar-10", "cifar-100")
    ]
    model = create(
        "Model", "model", workflow_id=workflow.id, name="resnet-50", type=5, framework=2,
        description="ResNet-50 image classifier",
    )
    experiment = create(
        "Experiment", "experiment", workflow_id=workflow.id, name="lr-sweep", status=3,
        hyperparameters={"learning_rate": [0.1, 0.01, 0.001, 0.0001]}, objective_metric="accuracy",
    )
    jobs = [
        create(
            "TrainingJob", f"job-{i}", experiment_id=experiment.id, dataset_id=datasets[0].id,
            status=4, hyperparameters={"learning_rate": lr}, metrics={"accuracy": 0.8 + i / 50},
            machine_type="n1-standard-8", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1,
        )
        for i, lr in enumerate((0.1, 0.01, 0.001, 0.0001))
    ]
    versions = [
        create(
            "ModelVersion", f"version-{v}", model_id=model.id, storage_path=f"gs://versatil-seed/resnet/v{v}",
            artifact_uri=f"projects/seed/models/resnet/versions/{v}", size=104_857_600,
            metrics={"accuracy": 0.88 + v / 100}, status=3, training_duration=3600 * v,
            training_job_id=jobs[v].id,
        )
        for v in (1, 2)
    ]
    endpoint = create(
        "Endpoint", "endpoint", model_id=model.id, name="resnet-prod", status=2,
        url="https://resnet-prod.example.test/predict",
        deployments=[
            _message("Deployment", model_version_id=versions[-1].id, traffic_split=100, min_replicas=1,
                     max_replicas=5, machine_type="n1-standard-2", status=3)
        ],
    )
    create(
        "PatternRecognitionJob", "anomalies", name="latency anomalies", pattern_type=1, status=4,
        source_uri="bq://seed.predictions", results={"anomalies": 3}, patterns_found=3,
    )
    service = create(
        "CloudRunService", "service", name="feature-api", region="europe-west1", project_id="versatil-seed",
        image="gcr.io/versatil-seed/feature-api:2", status=2, cpu="1", memory="512Mi", max_instances=3,
    )
    for revision in (1, 2):
        create(
            "ServiceDeployment", f"revision-{revision}", cloud_run_service_id=service.id,
            revision=f"feature-api-0000{revision}", image=f"gcr.io/versatil-seed/feature-api:{revision}",
            status=5 if revision == 1 else 3, traffic_percent=0 if revision == 1 else 100,
        )
    rng = random.Random(7)
    for start in range(0, PREDICTIONS, BATCH):
        requests = [
            _create_request(
                catalog,
                "Prediction", f"prediction-{i}", endpoint_id=endpoint.id, model_version_id=versions[-1].id,
                input={"image_uri": f"gs://versatil-seed/inputs/{i}.png"},
                output={"class": rng.choice(["cat", "dog", "ship", "truck"])},
                latency=int(rng.lognormvariate(3.5, 0.4)), confidence=round(rng.uniform(0.5, 1.0), 4),
                status=2,
            )
            for i in range(start, min(start + BATCH, PREDICTIONS))
        ]
        batch = _message("BatchCreatePredictionsRequest", requests=requests)
        standard.batch_create(catalog["Prediction"], batch, limits)
    return {resource.name: resource.model.select().count() for resource in catalog.values()}


def main() -> None:
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    db.connect(db.database_url(settings), settings)
    db.prepare_schema(settings)
    with models.database.connection_context():
        counts = seed(build_catalog(KeyRing.from_texts(settings.encryption_keys)), settings.limits)
    log.info("seeded; rows now: %s", ", ".join(f"{name} {count}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
