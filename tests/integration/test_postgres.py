"""The real bot process on PostgreSQL (issue 11): an agreement, a sanction and an export go into
the database named by `database.url`, and `audit verify` checks the chain there."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from tests.integration.harness import setup

# The point is PostgreSQL: the bot's `database.url` is the fresh database conftest's bot_database gives.
pytestmark = [pytest.mark.integration, pytest.mark.postgres_only]


async def test_the_bot_keeps_its_records_in_postgresql(gated, make_bot):
    mod = await setup(gated.hs, gated.bot, make_bot, gate=gated)
    dsn = mod.bot.config["database"]["url"]
    try:
        alice = await mod.member("alice", gated.hs)  # the agreement, accepted with !agree
        await mod.command(f"!warn {alice.user_id} spam in the square", "Recorded")
        await mod.command("!export cases", "Exported 1 cases row(s)")
        files = [e for e in mod.moderator.messages(mod.room, mod.bot_id) if e["content"].get("msgtype") == "m.file"]
        status, data = await mod.moderator.download(files[-1]["content"]["url"])
        assert status == 200 and "spam in the square" in data.decode("utf-8-sig")
    finally:
        for user in mod.users:
            await user.close()
    mod.bot.stop()

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT method FROM agreement_acceptances WHERE user_id = $1", alice.user_id) == "command"
        assert await conn.fetchval("SELECT kind FROM cases WHERE target = $1", alice.user_id) == "warn"
        actions = {r["action"] for r in await conn.fetch("SELECT action FROM audit_log")}
        assert {"agreement.accept", "records.export"} <= actions, actions
    finally:
        await conn.close()
    assert not (mod.bot.workdir / "bot.db").exists(), "no SQLite file beside the PostgreSQL bot"

    verified = subprocess.run([sys.executable, "-m", "bot", "audit", "verify", "--config", str(mod.bot.config_path)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit log intact" in verified.stdout
    # Checked against the database's head and each line of the head file the bot wrote beside its config.
    heads = (mod.bot.workdir / "bot.db.audit-head").read_text().splitlines()
    assert len(heads) >= 3 and f"checked against {1 + len(heads)} recorded head(s)" in verified.stdout
