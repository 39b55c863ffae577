"""``make seed`` loads a realistic sample, and loading it again changes nothing."""
import pytest

from server import seed
from server.core.limits import Limits
from tests.support import RESOURCES

pytestmark = pytest.mark.slow


def test_seed_is_complete_and_idempotent(rows) -> None:
    first = seed.seed(RESOURCES, Limits())
    again = seed.seed(RESOURCES, Limits())
    assert again == first
    sample = rows.Workflow.get(rows.Workflow.name == "Image classification pipeline")
    assert sample.datasets.count() == 2
    assert sum(d.versions.count() for d in sample.datasets) == 6
    endpoint = rows.Endpoint.get(rows.Endpoint.name == "resnet-prod")
    assert endpoint.predictions.count() == seed.PREDICTIONS
    assert endpoint.deployments.count() == 1
