"""The tests' throw-away PostgreSQL (tests/postgres.py, review 11, break 7): a cluster left behind
without an owner file is stopped once its server has idled past the grace, never while a client
is connected, never before."""

import asyncio
import os
import shutil
import tempfile

import asyncpg
import pytest

import tests.postgres
from tests.postgres import Cluster, server_bin


@pytest.fixture
def private_tmp(monkeypatch):
    # Short (a socket path has ~100 bytes) and private: the sweep must not see other runs' clusters.
    folder = tempfile.mkdtemp(prefix="g", dir="/tmp")
    os.chmod(folder, 0o755)  # as root the cluster runs as nobody, who must reach it
    monkeypatch.setattr(tempfile, "tempdir", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _running(cluster: Cluster) -> bool:
    try:
        pid = int((cluster.root / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def test_an_ownerless_cluster_is_stopped_when_idle_past_the_grace_and_not_while_used(private_tmp, monkeypatch):
    orphan = Cluster(server_bin())
    orphan.start()
    try:
        (orphan.root / "owner").unlink()  # as a cluster of the code before owner files
        sweeper = Cluster(server_bin())

        tests.postgres._stop_orphans(sweeper)  # within the hour's grace
        assert _running(orphan)

        monkeypatch.setattr(tests.postgres, "OWNERLESS_GRACE_SECONDS", 0)

        async def connected_sweep():
            client = await asyncpg.connect(orphan.dsn())
            try:
                tests.postgres._stop_orphans(sweeper)
            finally:
                await client.close()
        asyncio.run(connected_sweep())
        assert _running(orphan), "a client is connected: someone uses it"

        tests.postgres._stop_orphans(sweeper)
        assert not _running(orphan) and not orphan.root.exists()
    finally:
        if orphan.root.exists():
            orphan.stop()


def test_the_remains_of_an_ownerless_cluster_go_after_the_grace_a_fresh_folder_stays(private_tmp):
    remains, fresh = tempfile.mkdtemp(prefix="pgt."), tempfile.mkdtemp(prefix="pgt.")
    os.makedirs(os.path.join(remains, "data", "base"))
    hours_ago = os.path.getmtime(remains) - 2 * tests.postgres.OWNERLESS_GRACE_SECONDS
    os.utime(remains, (hours_ago, hours_ago))
    tests.postgres._stop_orphans(Cluster(server_bin()))
    assert not os.path.exists(remains)
    assert os.path.exists(fresh), "a folder being set up right now has no owner file yet"
