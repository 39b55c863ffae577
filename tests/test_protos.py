"""The resource service protos are generated: protos/generate.py from protos/templates/.

No database and no server: the generator renders in memory, from models.py and its table.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

GENERATOR = Path(__file__).resolve().parent.parent / "protos" / "generate.py"


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protos_generate", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(generate: ModuleType) -> dict[str, str]:
    return {path.name: text for path, text in generate.render().items()}


def test_checked_in_service_protos_are_what_the_generator_writes(generate: ModuleType) -> None:
    diffs = generate.stale()
    assert not diffs, (
        "a service proto differs from its template; edit protos/templates/ or the table in "
        "protos/generate.py, not the .proto, then run `make service-protos`:\n" + "".join(diffs)
    )


def test_every_resource_service_is_generated(generate: ModuleType, rendered: dict[str, str]) -> None:
    written = {path.name for path in generate.OUT.glob("*_service.proto")}
    assert written - set(rendered) == {"lineage_service.proto"}  # the one hand-written service
    assert len(rendered) == 13


def test_a_stale_proto_fails_the_check_with_a_diff(
    generate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path in generate.OUT.glob("*.proto"):
        shutil.copy(path, tmp_path)
    stale = tmp_path / "endpoint_service.proto"
    stale.write_text(stale.read_text().replace("  string etag = 2;", "  string etag = 2;\n  bool force = 4;", 1))
    monkeypatch.setattr(generate, "OUT", tmp_path)

    diffs = generate.stale()

    assert len(diffs) == 1
    assert "endpoint_service.proto" in diffs[0] and "-  bool force = 4;" in diffs[0]


def test_custom_rpcs_and_their_messages_are_generated(rendered: dict[str, str]) -> None:
    endpoint = rendered["endpoint_service.proto"]
    assert "rpc DeployModelVersion(DeployModelVersionRequest) returns (DeployModelVersionResponse);" in endpoint
    assert "rpc UndeployModelVersion(UndeployModelVersionRequest) returns (UndeployModelVersionResponse);" in endpoint
    assert "message DeployModelVersionRequest {" in endpoint
    assert "message UndeployModelVersionResponse {" in endpoint
    assert "rpc CancelTrainingJob(CancelTrainingJobRequest) returns (TrainingJob);" in rendered["training_job_service.proto"]
    assert "message RollbackCloudRunServiceResponse {" in rendered["cloud_run_service_service.proto"]


def test_search_is_generated_for_the_resources_with_embeddings(rendered: dict[str, str]) -> None:
    searched = {name for name, text in rendered.items() if "rpc Search" in text}
    assert searched == {
        "workflow_service.proto",
        "dataset_service.proto",
        "model_service.proto",
        "prediction_service.proto",
        "pattern_recognition_job_service.proto",
    }
    for name in searched:
        assert 'import "versatil/ml/v1/search.proto";' in rendered[name]
    assert "rpc SearchModels(SearchModelsRequest) returns (SearchModelsResponse);" in rendered["model_service.proto"]
    assert "message SearchModelsResult {" in rendered["model_service.proto"]
