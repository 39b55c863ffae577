"""Backups: a dump taken, the data changed, the dump restored: every table is as it was, row for row."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.ops import database as db
from tests.support import RESOURCES, Api, message
from tests.support.ops import ServerProcess, admin, migrate, run_module, scratch_database, stop_embedded


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Per table of the schema: its row count and an md5 of all its rows in a stable order."""
    tables = [row[0] for row in admin(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert len(tables) >= len(RESOURCES)
    return {
        table: tuple(admin(url, f"SELECT count(*), md5(coalesce(string_agg(t::text, '' ORDER BY t::text), '')) "
                                f'FROM "{table}" t')[0])
        for table in tables
    }


@pytest.mark.slow
def test_dump_then_restore_brings_back_every_row(database_url: str, tmp_path: Path) -> None:
    with scratch_database(database_url) as url:
        migrate(url)
        env = {"DATABASE_URL": url, "VERSATIL_BACKUP_DIR": str(tmp_path / "backups")}
        with ServerProcess(env) as server, server.channel() as channel:
            api = Api(channel)
            made = {name: api.create(name) for name in RESOURCES}  # Every resource, parents included.
        saved = fingerprint(url)
        assert all(saved[spec.model._meta.table_name][0] >= 1 for spec in RESOURCES.values())

        dumped = run_module("server.backup", env, "dump")
        assert dumped.returncode == 0, dumped.stderr
        path = Path(re.search(r"backup written: (\S+)", dumped.stdout)[1])
        assert re.fullmatch(r"versatil-\d{8}T\d{6}Z\.dump", path.name)
        assert path.parent == tmp_path / "backups" and path.stat().st_size > 0

        with ServerProcess(env) as server, server.channel() as channel:
            api = Api(channel)
            api.call("Workflow", "DeleteWorkflow", id=made["Workflow"].id)  # Cascades to its children.
            api.call("Model", "UpdateModel", model=message("Model", id=made["Model"].id, description="changed"),
                     update_mask={"paths": ["description"]})
            api.create("CloudRunService")
        changed = fingerprint(url)
        assert changed != saved

        restored = run_module("server.backup", env, "restore", str(path))
        assert restored.returncode == 0, restored.stderr
        assert fingerprint(url) == saved

        # The restored database serves: what was deleted is back.
        with ServerProcess(env) as server, server.channel() as channel:
            back = Api(channel).call("Workflow", "GetWorkflow", id=made["Workflow"].id)
            assert back.name == made["Workflow"].name


def test_restoring_a_missing_file_says_so(database_url: str, tmp_path: Path) -> None:
    result = run_module("server.backup", {"DATABASE_URL": database_url}, "restore", str(tmp_path / "nope.dump"))
    assert result.returncode == 1
    assert "no such backup" in result.stderr


@pytest.mark.slow
def test_a_dump_restores_into_a_new_cluster_once_migrated(database_url: str, tmp_path: Path) -> None:
    """Disaster recovery: the dump of one PostgreSQL restored on another, roles made by ``make migrate``."""
    with scratch_database(database_url) as url:
        migrate(url)
        with ServerProcess({"DATABASE_URL": url}) as server, server.channel() as channel:
            Api(channel).create("Prediction")
        saved = fingerprint(url)
        dump = tmp_path / "old.dump"
        assert run_module("server.backup", {"DATABASE_URL": url}, "dump", str(dump)).returncode == 0

    data_dir = tmp_path / "new"
    new_url = db.start_embedded(data_dir)  # Kept running by this process between the commands.
    try:
        env = {"DATABASE_URL": "", "VERSATIL_DATA_DIR": str(data_dir)}
        refused = run_module("server.backup", env, "restore", str(dump))  # Its policies name missing roles.
        assert refused.returncode == 1 and "make migrate" in refused.stderr
        assert run_module("server.migrate", env, "up").returncode == 0
        restored = run_module("server.backup", env, "restore", str(dump))
        assert restored.returncode == 0, restored.stderr
        assert fingerprint(new_url) == saved
    finally:
        stop_embedded(data_dir)
