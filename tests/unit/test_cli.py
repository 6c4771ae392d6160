"""`python -m bot audit verify`: exit 0 with the count on an intact log, 1 naming the row otherwise."""

import asyncio
import subprocess
import sys

import yaml

from bot.store.audit import append


async def _fill(database, rows=3):
    store = await database.open()
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
def test_audit_verify(tmp_path, database, tamper, problem):
    asyncio.run(_fill(database))
    config = tmp_path / "bot.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "homeserver": {"url": "http://127.0.0.1:1", "user_id": "@b:hs", "password": "p"},
                "database": database.config,
                "gate": {"enabled": False},
            }
        )
    )
    ok = _verify(config)
    assert ok.returncode == 0 and "3 rows checked" in ok.stdout
    database.forge_now(tamper)
    broken = _verify(config)
    assert broken.returncode == 1 and problem in broken.stdout, broken.stdout


def _config(tmp_path, database):
    config = tmp_path / "bot.yaml"
    config.write_text(yaml.safe_dump({
        "homeserver": {"url": "http://127.0.0.1:1", "user_id": "@b:hs", "password": "p"},
        "database": database.config, "gate": {"enabled": False},
    }))
    return config


def _audit(*args):
    return subprocess.run([sys.executable, "-m", "bot", "audit", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_verify_notices_the_newest_rows_removed_through_every_layer(tmp_path, database):
    """Cut the tail; then also fix the database's head record; then also delete the head file:
    each time verify still exits 1 naming what is gone, and the last time only the head the
    operator kept elsewhere can tell."""
    asyncio.run(_fill(database, rows=5))
    config = _config(tmp_path, database)
    kept = _audit("head", "--config", config)
    assert kept.returncode == 0, kept.stderr
    token, when = kept.stdout.split()
    assert token.startswith("5:") and len(token) == 2 + 64 and when.endswith("Z")

    database.forge_now("DELETE FROM audit_log WHERE id >= 4")
    cut = _audit("verify", "--config", config)
    assert cut.returncode == 1 and "audit log broken at row 4: rows 4..5 were removed" in cut.stdout, cut.stdout

    database.forge_now("DELETE FROM kv WHERE key = 'audit.head'")  # the database's own head agrees with the cut
    still = _audit("verify", "--config", config)
    assert still.returncode == 1 and "rows 4..5 were removed (the head file" in still.stdout, still.stdout

    (tmp_path / "bot.db.audit-head").unlink()
    blind = _audit("verify", "--config", config)
    assert blind.returncode == 0 and "3 rows checked" in blind.stdout  # nothing left here to tell
    outside = _audit("verify", "--config", config, "--head", token)
    assert outside.returncode == 1 and "rows 4..5 were removed (--head records row 5)" in outside.stdout


def test_a_missing_head_file_is_not_taken_for_an_intact_log(tmp_path, database):
    asyncio.run(_fill(database))
    config = _config(tmp_path, database)
    (tmp_path / "bot.db.audit-head").unlink()
    run = _audit("verify", "--config", config)
    assert run.returncode == 1 and "the head file" in run.stdout and "is missing" in run.stdout, run.stdout


def test_head_round_trips_into_verify_and_a_wrong_head_is_refused(tmp_path, database):
    asyncio.run(_fill(database))
    config = _config(tmp_path, database)
    token = _audit("head", "--config", config).stdout.split()[0]
    ok = _audit("verify", "--config", config, "--head", token)
    assert ok.returncode == 0 and "3 rows checked" in ok.stdout and f"head {token}" in ok.stdout
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    bad = _audit("verify", "--config", config, "--head", forged)
    assert bad.returncode == 1 and "row 3 does not match the head kept in --head" in bad.stdout, bad.stdout
    junk = _audit("verify", "--config", config, "--head", "three")
    assert junk.returncode == 2 and "is not a head like 42:" in junk.stderr
    # The configured head file is used instead of the default place.
    elsewhere = tmp_path / "elsewhere.heads"
    config.write_text(config.read_text() + f"records:\n  audit_head_file: {elsewhere}\n")
    asyncio.run(_fill_more(database, elsewhere))
    assert [line.split()[0] for line in elsewhere.read_text().splitlines()] == ["4"]
    database.forge_now("DELETE FROM audit_log WHERE id = 4")
    cut = _audit("verify", "--config", config)
    assert cut.returncode == 1 and "row 4 was removed (the database records it)" in cut.stdout, cut.stdout
    database.forge_now("DELETE FROM kv WHERE key = 'audit.head'")
    cut = _audit("verify", "--config", config)
    assert cut.returncode == 1 and f"row 4 was removed (the head file {elsewhere} records it)" in cut.stdout


async def _fill_more(database, head_file):
    store = await database.open(head_file)
    async with store.db.transaction() as conn:
        await append(conn, now_ms=99, actor="@m:hs", action="test", target="@t:hs", details={})
    await store.close()
