"""`python -m bot audit verify`: exit 0 with the count on an intact log, 1 naming the row otherwise."""

import asyncio
import sqlite3
import subprocess
import sys

import yaml

from bot.store import Store
from bot.store.audit import append


async def _fill(path, rows=3):
    store = await Store.open(path)
    for i in range(rows):
        async with store.db.transaction() as conn:
            await append(conn, now_ms=i, actor="@m:hs", action="test", target="@t:hs", details={"i": i})
    await store.close()


def _verify(config):
    return subprocess.run(
        [sys.executable, "-m", "bot", "audit", "verify", "--config", str(config)], capture_output=True, text=True, timeout=60
    )


import pytest


@pytest.mark.parametrize(
    "tamper, problem",
    [
        ("UPDATE audit_log SET actor = '@someone-else:hs' WHERE id = 2", "row 2 was altered"),
        ("DELETE FROM audit_log WHERE id = 2", "row 2 is missing"),
        ("INSERT INTO audit_log SELECT 4, created_at, actor, action, target, details, hash, 'forged' FROM audit_log WHERE id = 3",
         "row 4 was altered"),
    ],
    ids=["edited", "deleted", "inserted"],
)
def test_audit_verify(tmp_path, tamper, problem):
    db = tmp_path / "bot.db"
    asyncio.run(_fill(db))
    config = tmp_path / "bot.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "homeserver": {"url": "http://127.0.0.1:1", "user_id": "@b:hs", "password": "p"},
                "database": {"path": str(db)},
                "gate": {"enabled": False},
            }
        )
    )
    ok = _verify(config)
    assert ok.returncode == 0 and "3 rows checked" in ok.stdout
    with sqlite3.connect(db) as conn:
        conn.execute(tamper)
    broken = _verify(config)
    assert broken.returncode == 1 and problem in broken.stdout, broken.stdout
