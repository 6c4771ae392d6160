"""The gate first: it answers from the store (acceptances, measures in force, the register) before
the Matrix side exists, keeps what it sees until that side binds, and never imports matrix-nio."""

import subprocess
import sys

from aiohttp.test_utils import TestClient, TestServer

from bot.config import Settings
from bot.gatefirst import GateFirst, measure_of
from bot.i18n import Translator
from bot.store import Acceptance, NewCase

BOT = "@bot:hs.test"
NOW = 1_800_000_000_000


def settings_for(database) -> Settings:
    return Settings(homeserver={"url": "http://127.0.0.1:9", "user_id": BOT, "password": "x" * 16},
                    gate={"enabled": False}, language="en", **database.settings)


async def seeded(database) -> None:
    store = await database.open()
    try:
        await store.agreements.record_acceptance(
            Acceptance("@agreed:hs.test", "1", "0" * 64, NOW - 10, "$a", "!dm:hs.test", "command"))
        await store.rooms.set_dm_room("@agreed:hs.test", "!dm:hs.test", NOW - 20)
        for target, expires in (("@muted:hs.test", NOW + 3_600_000), ("@overdue:hs.test", NOW - 1)):
            await store.cases.open(NewCase(target=target, kind="restrict", actor="@mod:hs.test", reason="spam",
                                           created_at=NOW - 7_200_000, expires_at=expires))
    finally:
        await store.close()


async def test_the_state_comes_from_the_store_and_overdue_measures_bind_nobody(database):
    await seeded(database)
    early = await GateFirst.open(settings_for(database), Translator("en"), lambda: NOW)
    try:
        state = early.state
        assert state.accepted == {"@agreed:hs.test": "1"}
        assert state.dm_room_by_user == {"@agreed:hs.test": "!dm:hs.test"}
        assert state.is_dm_of("!dm:hs.test", "@agreed:hs.test")
        assert "@muted:hs.test" in state.sanctions
        assert "@overdue:hs.test" not in state.sanctions
        assert early.gate is None and early.directory is not None
    finally:
        await early.close()


async def test_what_the_gate_sees_before_the_matrix_side_binds_is_handed_over(database):
    early = await GateFirst.open(settings_for(database), Translator("en"), lambda: NOW)
    try:
        early.prompt("@new:hs.test")
        early.prompt("@new:hs.test")
        early.published("@owner:hs.test", "!room:hs.test")
        assert early.health() == {"status": "ok", "loops": {}, "matrix": "connecting", "onboarding_queue": 1}
        prompted, published = [], []
        early.bind(lambda work, name: None, prompted.append, lambda u, r: published.append((u, r)),
                   lambda: {"status": "degraded"})
        assert prompted == ["@new:hs.test"] and published == [("@owner:hs.test", "!room:hs.test")]
        early.prompt("@later:hs.test")
        assert prompted[-1] == "@later:hs.test"
        assert early.health() == {"status": "degraded"}
    finally:
        await early.close()


async def test_the_gate_refuses_a_restricted_account_before_the_login(database):
    await seeded(database)
    early = await GateFirst.open(settings_for(database), Translator("en"), lambda: NOW)
    try:
        # The gate object as GateFirst builds it with the gate enabled, served without a port.
        from bot.gate.server import Gate

        gate = Gate(early.state, Translator("en"), "token", early.prompt, early.health, lambda: NOW, early.published,
                    early.directory)
        client = TestClient(TestServer(gate.app()))
        await client.start_server()
        try:
            event = {"type": "m.room.message", "sender": "@muted:hs.test", "room_id": "!r:hs.test",
                     "content": {"msgtype": "m.text", "body": "hello"}}
            resp = await client.post("/antispam/check_event_for_spam", json={"event": event},
                                     headers={"Authorization": "Bearer token"})
            body = await resp.json()
            assert resp.status == 403 and body["errcode"] == "M_FORBIDDEN"
        finally:
            await client.close()
    finally:
        await early.close()


def test_measure_of_reads_a_case_as_the_sanctions_service_does():
    from bot.sanctions import _measure
    from bot.store import Case

    fields = Case.__dataclass_fields__
    sample = {name: None for name in fields}
    sample.update(id=7, target="@x:hs.test", kind="restrict", expires_at=NOW, rate="3/1h")
    case = Case(**sample)
    assert measure_of(case) == _measure(case)


def test_the_gate_path_does_not_import_matrix_nio():
    code = "import sys, bot.gatefirst; sys.exit(1 if 'nio' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_socket_is_inherited_only_when_systemd_passed_it_to_this_process(monkeypatch):
    from bot.gate.server import inherited_socket

    monkeypatch.delenv("LISTEN_PID", raising=False)
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert inherited_socket() is None
    monkeypatch.setenv("LISTEN_PID", "1")  # another process's
    assert inherited_socket() is None
    import os

    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    assert inherited_socket() is None


async def test_a_new_rooms_refused_text_seen_before_the_service_binds_is_cleared_once_it_does(database):
    import asyncio

    early = await GateFirst.open(settings_for(database), Translator("en"), lambda: NOW)
    try:
        cleared = []
        waiting = asyncio.ensure_future(early.directory.on_initial_text("!r:hs.test", "@c:hs.test", {}, None, ["#r:hs.test"]))
        await asyncio.sleep(0.01)
        assert not waiting.done()

        async def clear(room_id, creator, refused, error, aliases):
            cleared.append((room_id, creator, aliases))

        early.directory.on_initial_text = clear  # as the service sets it, before bind
        early.bind(lambda work, name: None, lambda user: None, lambda u, r: None, lambda: {})
        await asyncio.wait_for(waiting, 1)
        assert cleared == [("!r:hs.test", "@c:hs.test", ["#r:hs.test"])]
    finally:
        await early.close()
