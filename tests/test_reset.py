"""``make reset``: drop and re-migrate; the embedded database always, a shared one only when forced."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from server.ops import database as db
from tests.support import ROOT
from tests.support.ops import admin, migrate, run_module, scratch_database, stop_embedded


def _add_workflow(url: str) -> str:
    workflow_id = str(uuid.uuid4())
    admin(url, f"INSERT INTO workflows (id, name, status, created_by, config) "
               f"VALUES ('{workflow_id}', 'doomed', 'DRAFT', 'tests', '{{}}')")
    return workflow_id


def _workflows(url: str) -> int:
    return admin(url, "SELECT count(*) FROM workflows")[0][0]


def _pending(env: dict[str, str]) -> list[str]:
    status = run_module("server.migrate", env, "status")
    assert status.returncode == 0, status.stderr
    return [line for line in status.stdout.splitlines() if line.endswith("pending")]


@pytest.mark.slow
def test_reset_refuses_a_shared_database_unless_forced(database_url: str) -> None:
    with scratch_database(database_url) as url:
        migrate(url)
        _add_workflow(url)
        env = {"DATABASE_URL": url}

        refused = run_module("server.migrate", env, "reset")
        assert refused.returncode == 2
        assert "refusing to reset" in refused.stderr and "FORCE=1" in refused.stderr
        assert _workflows(url) == 1

        forced = run_module("server.migrate", env, "reset", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "applied 0001_initial_schema" in forced.stdout
        assert _workflows(url) == 0
        assert _pending(env) == []


@pytest.mark.slow
def test_reset_drops_and_remigrates_the_embedded_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = db.start_embedded(data_dir)  # Kept running by this process between the commands.
    try:
        env = {"DATABASE_URL": "", "VERSATIL_DATA_DIR": str(data_dir)}
        assert run_module("server.migrate", env, "up").returncode == 0
        _add_workflow(url)
        admin(url, "CREATE TABLE leftover (x int)")  # Not even a table the migrations know survives.

        reset = run_module("server.migrate", env, "reset")
        assert reset.returncode == 0, reset.stderr
        assert _workflows(url) == 0
        assert not admin(url, "SELECT 1 FROM pg_tables WHERE tablename = 'leftover'")
        assert _pending(env) == []
    finally:
        stop_embedded(data_dir)


@pytest.mark.parametrize(("force", "flag"), [("", False), ("1", True)])
def test_make_reset_passes_force_on(force: str, flag: bool) -> None:
    dry = subprocess.run(["make", "-n", "reset", f"FORCE={force}"], cwd=ROOT, capture_output=True, text=True)
    command = next(line for line in dry.stdout.splitlines() if "server.migrate reset" in line)
    assert command.rstrip().endswith("--force") is flag
