"""Values under ``secrets`` in Workflow.config and CloudRunService.env: encrypted at rest.

The keys are the server's (``VERSATIL_ENCRYPTION_KEYS``, read once when it is
made); a test that rotates them starts another server on the same database, as
a restart with the new variable would.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

import models
from server.app import create_server
from server.config import Settings
from server.domain import secrets as encryption
from tests.support import RESOURCES, ROOT, message, refused
from tests.support.security import SecuredServer, secured_server

KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.urlsafe_b64encode(b"B" * 32).decode().rstrip("=")  # urlsafe and unpadded are accepted too.
COLUMNS = {"Workflow": "config", "CloudRunService": "env"}


ROLES = {"rita": "reader", "walt": "writer", "ada": "admin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[SecuredServer]:
    with secured_server(tmp_path_factory.mktemp("enc"), ROLES, encryption_keys=(KEY_A,)) as running:
        yield running


def document(resource: str, made: Any) -> dict[str, Any]:
    return json_format.MessageToDict(getattr(made, COLUMNS[resource]))


def stored(resource: str, resource_id: str) -> dict[str, Any]:
    """The column as PostgreSQL holds it."""
    model = models.Workflow if resource == "Workflow" else models.CloudRunService
    field = model._meta.fields[COLUMNS[resource]]
    with models.database.connection_context():
        return model.select(field).where(model.id == resource_id).scalar()


def create(server: SecuredServer, principal: str, resource: str, values: dict[str, Any]) -> Any:
    return server.api(principal).create(resource, **{COLUMNS[resource]: values})


@pytest.mark.parametrize("resource", COLUMNS)
def test_secrets_are_encrypted_at_rest_and_only_admins_read_them(server: SecuredServer, resource: str) -> None:
    values = {"mode": "prod", "secrets": {"API_KEY": "s3cr3t-value", "RETRIES": 3, "NESTED": {"a": [1, "two"]}}}
    made = create(server, "walt", resource, values)

    at_rest = stored(resource, made.id)
    assert at_rest["mode"] == "prod" and set(at_rest["secrets"]) == {"API_KEY", "RETRIES", "NESTED"}
    assert all(encryption.is_sealed(v) for v in at_rest["secrets"].values())
    assert "s3cr3t-value" not in json.dumps(at_rest) and '"two"' not in json.dumps(at_rest)

    masked = {"mode": "prod", "secrets": {name: encryption.MASK for name in values["secrets"]}}
    assert document(resource, made) == masked  # The writer's own response is masked too.
    for principal in ("rita", "walt"):
        got = server.api(principal).call(resource, f"Get{resource}", id=made.id)
        assert document(resource, got) == masked
    admin = server.api("ada")
    assert document(resource, admin.call(resource, f"Get{resource}", id=made.id)) == values
    listed = admin.call(resource, f"List{resource}s", filter=f'id = "{made.id}"')
    assert document(resource, getattr(listed, RESOURCES[resource].plural)[0]) == values


def test_a_masked_value_sent_back_keeps_the_secret(server: SecuredServer) -> None:
    made = create(server, "walt", "Workflow", {"secrets": {"TOKEN": "t-1", "OTHER": "o-1"}})
    seen = server.api("walt").call("Workflow", "GetWorkflow", id=made.id)
    changed = document("Workflow", seen)
    changed["secrets"]["OTHER"] = "o-2"  # TOKEN goes back as the mask.
    server.api("walt").call("Workflow", "UpdateWorkflow", workflow=message("Workflow", id=made.id, config=changed),
                            update_mask={"paths": ["config"]})
    admin = server.api("ada").call("Workflow", "GetWorkflow", id=made.id)
    assert document("Workflow", admin) == {"secrets": {"TOKEN": "t-1", "OTHER": "o-2"}}


def test_a_ciphertext_copied_to_another_row_does_not_decrypt(server: SecuredServer) -> None:
    one = create(server, "walt", "Workflow", {"secrets": {"K": "one"}})
    two = create(server, "walt", "Workflow", {"secrets": {"K": "two"}})
    with models.database.connection_context():
        models.Workflow.update(config=stored("Workflow", one.id)).where(models.Workflow.id == two.id).execute()
    got = server.api("ada").call("Workflow", "GetWorkflow", id=two.id)
    assert document("Workflow", got) == {"secrets": {"K": encryption.MASK}}


def test_a_secrets_value_that_is_not_an_object_is_encrypted_whole(server: SecuredServer) -> None:
    made = create(server, "walt", "CloudRunService", {"secrets": "postgres://u:p@h/db"})
    assert encryption.is_sealed(stored("CloudRunService", made.id)["secrets"])
    assert document("CloudRunService", made) == {"secrets": encryption.MASK}
    got = server.api("ada").call("CloudRunService", "GetCloudRunService", id=made.id)
    assert document("CloudRunService", got) == {"secrets": "postgres://u:p@h/db"}


def test_batch_creates_and_upserts_encrypt_too(server: SecuredServer) -> None:
    walt = server.api("walt")
    batch = walt.call("Workflow", "BatchCreateWorkflows", requests=[
        message("CreateWorkflowRequest", workflow=walt.sample("Workflow", config={"secrets": {"N": i}})) for i in range(3)])
    upsert = walt.call("Workflow", "UpdateWorkflow", allow_missing=True,
                       workflow=walt.sample("Workflow", id=str(uuid.uuid4()), config={"secrets": {"N": 9}}))
    for made in [*batch.workflows, upsert]:
        assert encryption.is_sealed(stored("Workflow", made.id)["secrets"]["N"])


def test_keys_rotate_old_values_still_decrypt_and_new_writes_use_the_new_key(server: SecuredServer, tmp_path) -> None:
    old = create(server, "walt", "Workflow", {"secrets": {"K": "under-a"}})
    kid_a, kid_b = (encryption.key_id(encryption.parse_key(k)) for k in (KEY_A, KEY_B))
    assert stored("Workflow", old.id)["secrets"]["K"].startswith(f"enc:v1:{kid_a}:")

    with secured_server(tmp_path / "b-a", ROLES, encryption_keys=(KEY_B, KEY_A)) as restarted:
        admin = restarted.api("ada")
        assert document("Workflow", admin.call("Workflow", "GetWorkflow", id=old.id)) == {"secrets": {"K": "under-a"}}
        new = create(restarted, "walt", "Workflow", {"secrets": {"K": "under-b"}})
        assert stored("Workflow", new.id)["secrets"]["K"].startswith(f"enc:v1:{kid_b}:")

    # A was retired before its values were re-encrypted: they stay masked.
    with secured_server(tmp_path / "b", ROLES, encryption_keys=(KEY_B,)) as restarted:
        admin = restarted.api("ada")
        assert document("Workflow", admin.call("Workflow", "GetWorkflow", id=old.id)) == {"secrets": {"K": encryption.MASK}}
        assert document("Workflow", admin.call("Workflow", "GetWorkflow", id=new.id)) == {"secrets": {"K": "under-b"}}


def test_the_rotate_command_re_encrypts_everything_with_the_newest_key(
    server: SecuredServer, database_url: str, tmp_path
) -> None:
    old = create(server, "walt", "CloudRunService", {"secrets": {"K": "rotated"}, "plain": 1})
    result = subprocess.run(
        [sys.executable, "-m", "server.encryption", "rotate"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": database_url, "VERSATIL_ENCRYPTION_KEYS": f"{KEY_B},{KEY_A}"},
    )
    assert result.returncode == 0, result.stderr
    kid_b = encryption.key_id(encryption.parse_key(KEY_B))
    assert stored("CloudRunService", old.id)["secrets"]["K"].startswith(f"enc:v1:{kid_b}:")
    with secured_server(tmp_path, ROLES, encryption_keys=(KEY_B,)) as restarted:
        got = restarted.api("ada").call("CloudRunService", "GetCloudRunService", id=old.id)
    assert document("CloudRunService", got) == {"secrets": {"K": "rotated"}, "plain": 1}


def test_a_secret_cannot_be_written_without_a_key(server: SecuredServer, tmp_path) -> None:
    with secured_server(tmp_path, ROLES, encryption_keys=()) as keyless:
        refused(lambda: create(keyless, "walt", "Workflow", {"secrets": {"K": "v"}}),
                grpc.StatusCode.FAILED_PRECONDITION, "VERSATIL_ENCRYPTION_KEYS")
        made = create(keyless, "walt", "Workflow", {"no": "secrets"})  # Other values need no key.
        assert document("Workflow", made) == {"no": "secrets"} == stored("Workflow", made.id)


def test_a_bad_key_is_refused_at_start(database_url: str) -> None:
    bad = Settings(listen="127.0.0.1:0", dev_token="t", encryption_keys=(base64.b64encode(b"short").decode(),))
    with pytest.raises(ValueError, match="32 bytes"):
        create_server(bad)
