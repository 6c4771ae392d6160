"""!export is a journaled effect: the file leaves the server only with its audit record, once,
sent by the executor from a private staged file it deletes afterwards."""

import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

from bot.commands.dispatch import Dispatcher
from bot.commands.records import COMMANDS as RECORD_COMMANDS
from bot.commands.registry import Registry
from tests.unit.test_effects import MGMT, MOD, World


class FilesMatrix:
    def __init__(self):
        self.files, self.notices = [], []

    async def send_file(self, room, data, size, name, mime, *, txn=None):
        self.files.append((room, name, data.read(), txn))
        return "$file"

    async def send_notice(self, room_id, body, *, txn, reply_to=None):
        self.notices.append(body)
        return "$notice"


def export_world(store):
    world = World(store)
    matrix = FilesMatrix()
    registry = Registry(RECORD_COMMANDS)
    dispatcher = Dispatcher(registry, replace(world.dispatcher._services, matrix=matrix, registry=registry))
    event = {"event_id": "$exp", "sender": MOD, "type": "m.room.message",
             "content": {"msgtype": "m.text", "body": "!export cases"}}
    return world, matrix, dispatcher, event


async def export_rows(store):
    return await store.db.fetchall("SELECT id FROM audit_log WHERE action = 'records.export'")


async def test_an_export_whose_unit_rolls_back_sends_nothing_and_the_replay_sends_once(store, tmp_path):
    world, matrix, dispatcher, event = export_world(store)
    real_add = store.effects.add
    calls = 0

    async def locked_reply(kind, *a, **k):
        nonlocal calls
        calls += 1
        if kind == "notice":  # the reply's write hits a locked store: the unit rolls back
            raise sqlite3.OperationalError("database is locked")
        return await real_add(kind, *a, **k)

    store.effects.add = locked_reply
    try:
        await dispatcher.handle(MGMT, event, answer_unknown=True, moderator_place=True)
    except sqlite3.OperationalError:
        pass
    store.effects.add = real_add
    assert calls >= 1
    assert matrix.files == [] and await export_rows(store) == []
    assert list(tmp_path.glob("exports/*")) == []  # the staged file went with the rollback

    await dispatcher.handle(MGMT, event, answer_unknown=True, moderator_place=True)  # the batch again
    assert len(await export_rows(store)) == 1
    effect = await store.effects.get("export/$exp")
    staged = Path(effect.payload["path"])
    assert staged.parent == tmp_path / "exports"
    assert stat.S_IMODE(staged.stat().st_mode) == 0o600
    assert matrix.files == []  # nothing is sent before the commit

    ex = world.executor()
    ex._matrix = matrix
    await ex.run_due()
    assert [(room, name) for room, name, _, _ in matrix.files] == [(MGMT, "cases-all.csv")]
    assert matrix.files[0][2] == b"\xef\xbb\xbf" + matrix.files[0][2][3:]  # the CSV as exported
    assert matrix.files[0][3]  # a deterministic transaction ID
    assert not staged.exists()
    assert (await store.effects.get("export/$exp")).status == "done"
    await dispatcher.handle(MGMT, event, answer_unknown=True, moderator_place=True)
    await ex.run_due()
    assert len(matrix.files) == 1 and len(await export_rows(store)) == 1


async def test_a_send_retried_after_the_file_was_deleted_is_not_sent_again(store):
    world, matrix, dispatcher, event = export_world(store)
    await dispatcher.handle(MGMT, event, answer_unknown=True, moderator_place=True)
    effect = await store.effects.get("export/$exp")
    Path(effect.payload["path"]).unlink()  # sent and deleted; the done mark never committed
    ex = world.executor()
    ex._matrix = matrix
    await ex.run_due()
    assert matrix.files == []
    assert (await store.effects.get("export/$exp")).status == "done"
