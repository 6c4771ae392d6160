"""Test harness: the bot as a real process, and real matrix-nio clients acting as users."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import aiohttp
import yaml
from nio import AsyncClient, InviteMemberEvent, JoinResponse, LoginResponse, SyncResponse

from bot.devserver import Homeserver, RegisteredUser
from bot.store.migrations import APPEND_ONLY_TABLES

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "first sync complete"
TAKEOVER_LINE = "active: took over"  # bot.ha, on PostgreSQL
SNAPSHOT_SERVED_LINE = "replica snapshot for"  # bot.replica.publisher, a module's snapshot served


class BotProcess:
    """`python -m bot run --config FILE`, started, stopped, killed and restarted like in production."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "bot.yaml"
        self.log_path = workdir / "bot.log"
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        # In-process modules (InprocessServer) served by this bot: start() returns once each has
        # taken a snapshot from the new process, as the gate is answering once start() returns.
        self.replicas: list[Any] = []

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        replica_offsets = [(replica, replica.log_size()) for replica in self.replicas]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", "--config", str(self.config_path)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bot exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if READY_LINE in self.log(offset):
                for replica, since in replica_offsets:
                    replica.wait_for_snapshot(since, max(1.0, deadline - time.monotonic()))
                if self.replicas and self.backend == "postgres":
                    self._wait_for_snapshots_of_the_active(offset, deadline)
                return
            time.sleep(0.05)
        raise RuntimeError(f"bot not ready within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def _wait_for_snapshots_of_the_active(self, offset: int, deadline: float) -> None:
        """On PostgreSQL the process stands by first: a module's first snapshot is of the standby's
        state, and the module takes another once the process has taken over (its replica epoch
        changed), a moment after the ready line. Until then the module answers from the state
        before the takeover, so a test's next step (an !agree) would not reach it yet."""
        while time.monotonic() < deadline:
            _, took_over, since_takeover = self.log(offset).rpartition(TAKEOVER_LINE)
            if took_over and since_takeover.count(SNAPSHOT_SERVED_LINE) >= len(self.replicas):
                return
            time.sleep(0.05)
        raise RuntimeError(f"no module took a snapshot of the active bot's state:\n{self.log(offset)[-3000:]}")

    def log(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"bot did not stop within {timeout:.0f} s after signal {signum}")
        code, self.process = self.process.returncode, None
        return code

    # --- the bot's database, read and changed as its operator could, on either backend (issue 11) ---
    @property
    def backend(self) -> str:
        return database_backend(self.config["database"])

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """The rows of a query in the SQLite dialect the store speaks, from the bot's database."""
        return await database_rows(self.config["database"], sql, params)

    async def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The one value a query returns (None for no row)."""
        found = await self.rows(sql, params)
        return found[0][0] if found else None

    async def change(self, sql: str, params: Sequence[Any] = (), *, past_append_only: bool = False) -> None:
        """One write to the bot's database, as its operator could make it. ``past_append_only``: with
        the append-only triggers (migration 10) set aside for this one statement and back afterwards,
        as whoever owns the file or the server could (a forgery the audit chain must catch, or a
        clock moved forward)."""
        await database_change(self.config["database"], sql, params, past_append_only)

    async def texts_holding(self, needle: str) -> list[str]:
        """Tables one of whose values holds ``needle`` as text (a secret that must not be stored)."""
        return await database_texts_holding(self.config["database"], needle)


class User:
    """A person with a Matrix client: syncs, remembers what it saw, sends, and waits for things."""

    def __init__(self, hs: Homeserver, account: RegisteredUser) -> None:
        self.hs = hs
        self.account = account
        self.user_id = account.user_id
        self.client = AsyncClient(hs.url, account.user_id)
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        self.timeline: list[tuple[str, dict[str, Any]]] = []
        # One entry per event ID: a homeserver may send an event down /sync again (Synapse has
        # open issues about it). A second copy is kept here, not counted as another message:
        # two sends by the bot are two event IDs and still count twice.
        self.seen: set[str] = set()
        self.redelivered: list[tuple[str, dict[str, Any]]] = []
        self.invites: dict[str, str] = {}
        self.invite_content: dict[str, dict[str, Any]] = {}

    async def login(self) -> str:
        """A password login on a new device: Synapse calls check_login_for_spam for it."""
        response = await self.client.login(self.account.password, device_name="test")
        assert isinstance(response, LoginResponse), response
        return response.device_id

    async def close(self) -> None:
        await self.client.close()

    async def sync(self, timeout_ms: int = 300) -> None:
        response = await self.client.sync(timeout=timeout_ms)
        assert isinstance(response, SyncResponse), response
        for room_id, info in response.rooms.invite.items():
            for event in info.invite_state:
                if isinstance(event, InviteMemberEvent) and event.state_key == self.user_id:
                    self.invites[room_id] = event.sender
                    self.invite_content[room_id] = event.content
        for room_id, info in response.rooms.join.items():
            for event in info.timeline.events:
                event_id = event.source.get("event_id")
                if event_id in self.seen:
                    self.redelivered.append((room_id, event.source))
                    continue
                if event_id is not None:
                    self.seen.add(event_id)
                self.timeline.append((room_id, event.source))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            await self.sync()
        raise AssertionError(f"{self.user_id}: timed out after {timeout:.0f} s waiting for {what or predicate}")

    async def wait_for_invite(self, inviter: str, timeout: float = 20.0) -> str:
        return await self.wait_for(
            lambda: next((room for room, who in self.invites.items() if who == inviter), None),
            timeout, f"an invite from {inviter}",
        )

    def messages(self, room_id: str, sender: str | None = None) -> list[dict[str, Any]]:
        return [
            e for r, e in self.timeline
            if r == room_id and e.get("type") == "m.room.message" and (sender is None or e.get("sender") == sender)
        ]

    async def wait_for_message(self, room_id: str, sender: str, contains: str, timeout: float = 20.0, after: int = 0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next(
                (e for e in self.messages(room_id, sender)[after:] if contains in e.get("content", {}).get("body", "")),
                None,
            )

        try:
            return await self.wait_for(find, timeout, f"a message from {sender} containing {contains!r}")
        except AssertionError as exc:
            seen = [e.get("content", {}).get("body", "")[:200] for e in self.messages(room_id, sender)[after:]][-3:]
            raise AssertionError(f"{exc}; its latest messages there: {seen}") from None

    async def join(self, room: str) -> str:
        response = await self.client.join(room)
        assert isinstance(response, JoinResponse), response
        self.invites.pop(response.room_id, None)
        return response.room_id

    async def say(self, room_id: str, body: str):
        content = {"msgtype": "m.text", "body": body}
        return await self.client.room_send(room_id, "m.room.message", content, tx_id=uuid.uuid4().hex)

    async def react(self, room_id: str, event_id: str, key: str):
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.client.room_send(room_id, "m.reaction", content, tx_id=uuid.uuid4().hex)

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.hs.url + path, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

    async def download(self, mxc: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        url = f"{self.hs.url}/_matrix/client/v1/media/download/{mxc.removeprefix('mxc://')}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=headers) as resp:
                return resp.status, await resp.read()

    async def create_room(self, **body: Any) -> tuple[int, dict[str, Any]]:
        return await self.api("POST", "/_matrix/client/v3/createRoom", body)

    async def power_levels(self, room_id: str) -> dict[str, Any]:
        status, content = await self.api("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/")
        assert status == 200, content
        return content



def refused(response, *needles: str) -> None:
    """A nio send answered M_FORBIDDEN, and its message says each needle."""
    assert getattr(response, "status_code", None) == "M_FORBIDDEN", response
    for needle in needles:
        assert needle in response.message, response.message


def sent(response) -> None:
    assert getattr(response, "event_id", None), response


async def send_raw(user: "User", room_id: str, kind: str, content: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Any event type with any content, as a client would PUT it: (HTTP status, JSON answer)."""
    return await user.api("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/{kind}/{uuid.uuid4().hex}", content)


async def put_state(user: "User", room_id: str, kind: str, content: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await user.api("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/{kind}/", content)

async def new_user(hs: Homeserver, name: str, *, admin: bool = False) -> User:
    """A fresh account with a unique name (tests share one homeserver)."""
    account = await hs.register(f"{name}-{uuid.uuid4().hex[:8]}", admin=admin)
    return User(hs, account)


async def until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or check}")


@dataclass
class Moderation:
    bot: BotProcess
    bot_id: str
    moderator: User
    room: str  # the management room
    users: list[User]

    async def command(self, text: str, expect: str, timeout: float = 20.0) -> dict:
        """A moderator's command in the management room, and the bot's reply containing ``expect``."""
        before = len(self.moderator.messages(self.room, self.bot_id))
        await self.moderator.say(self.room, text)
        return await self.moderator.wait_for_message(self.room, self.bot_id, expect, timeout, after=before)

    async def protected_room(self) -> str:
        """A public room the moderator owns, the bot at power 100, and the bot restarted to protect it."""
        status, room = await self.moderator.create_room(
            preset="public_chat", name="Protected", invite=[self.bot_id],
            power_level_content_override={"users": {self.bot_id: 100}},
        )
        assert status == 200, room
        self.bot.stop()
        self.bot.config["protected_rooms"] = [room["room_id"]]
        self.bot.start()
        return room["room_id"]

    async def member(self, name: str, hs) -> User:
        """A user who has agreed, with its DM to the bot open."""
        user = await new_user(hs, name)
        self.users.append(user)
        await user.login()
        user.dm = await user.wait_for_invite(self.bot_id)
        await user.join(user.dm)
        await user.wait_for_message(user.dm, self.bot_id, "!agree")
        await user.say(user.dm, "!agree")
        await user.wait_for_message(user.dm, self.bot_id, "recorded")
        return user


async def setup(hs, account, make_bot, gate=None, **config) -> Moderation:
    """A moderator, the bot running, and a management room created afterwards, as an operator would:
    the bot recognises the configured alias when it is invited."""
    moderator = await new_user(hs, "mod")
    alias = f"mods-{moderator.user_id[5:13]}"
    process = make_bot(hs, account, gate=gate, admin_token=True, moderators=[moderator.user_id],
                       management_room=f"#{alias}:{hs.server_name}", **config)
    process.start()
    status, room = await moderator.create_room(name="Moderators", room_alias_name=alias, invite=[account.user_id])
    assert status == 200, room
    moderation = Moderation(process, account.user_id, moderator, room["room_id"], [moderator])
    await moderation.command("!cases", "No cases")  # answered only once the room is known as the management room
    return moderation


# --- the in-process module (bot.synapse, issue 10) ---
INPROCESS_SNIPPET = REPO / "config" / "synapse-module-inprocess.yaml"


def inprocess_modules(bot_url: str, token: str, language: str = "en", **overrides: Any) -> list[dict[str, Any]]:
    """The `modules:` list of the README's in-process snippet with the bot's address filled in;
    ``overrides`` replace keys of its config (tests of max_staleness and the like)."""
    import string

    text = string.Template(INPROCESS_SNIPPET.read_text(encoding="utf-8")).substitute(
        BOT_URL=bot_url, BOT_TOKEN=token, LANGUAGE=language)
    modules = yaml.safe_load(text)["modules"]
    modules[0]["config"].update(overrides)
    return modules


class InprocessServer:
    """A Synapse that loads bot.synapse.RulesModule, pointed at the gate port of the bots under
    test (the bot serves the replica there). Shaped like conftest's GatedServer, so a bot made with
    ``gate=`` this server listens where the module looks."""

    def __init__(self, workdir: Path, gate_port: int, gate_token: str, **module_overrides: Any) -> None:
        self.gate_port = gate_port
        self.gate_token = gate_token
        modules = inprocess_modules(f"http://127.0.0.1:{gate_port}", gate_token, **module_overrides)
        self.hs = Homeserver(workdir, extra_config={"modules": modules})
        self.also: list[InprocessServer] = []  # more Synapse processes served by the same bot

    def module_log(self, offset: int = 0) -> str:
        if not self.hs.log_path.exists():
            return ""
        with open(self.hs.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.hs.log_path.stat().st_size if self.hs.log_path.exists() else 0

    def wait_for_snapshot(self, offset: int, timeout: float = 15.0) -> None:
        """Until the module logs a snapshot after ``offset`` of Synapse's log. Blocking, like
        BotProcess.start: Synapse is another process."""
        deadline = time.monotonic() + timeout
        while "rules replica: snapshot at" not in self.module_log(offset):
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica snapshot within {timeout:.0f} s; see {self.hs.log_path}")
            time.sleep(0.05)
# --- end of the in-process module ---


# --- the bot's database on either backend (issue 11): the tests read and change it through these,
# in the SQLite dialect the store's repositories speak; on PostgreSQL, bot.store.pg.PgConnection
# translates it as it does for the bot. One connection per call: the bot may be running, stopped
# or killed between two calls. ---
def database_backend(database: dict[str, Any]) -> str:
    return "postgres" if str(database.get("url", "")).startswith("postgres") else "sqlite"


def _sqlite_path(database: dict[str, Any]) -> str:
    return database.get("path") or str(database["url"]).removeprefix("sqlite:///")


async def _pg_connection(database: dict[str, Any]):
    from bot.store.pg import PgConnection

    conn = await PgConnection.connect(database["url"])
    await conn.load_schema()  # the keys the translator needs
    return conn


async def database_rows(database: dict[str, Any], sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    if database_backend(database) == "sqlite":
        return await asyncio.to_thread(_sqlite_rows, _sqlite_path(database), sql, tuple(params))
    conn = await _pg_connection(database)
    try:
        async with conn.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]
    finally:
        await conn.close()


def _sqlite_rows(path: str, sql: str, params: tuple) -> list[tuple]:
    # Read-only: a test that reads never changes what it checks (WAL: it never blocks the bot either).
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


_SQLITE_APPEND_ONLY = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%append_only%'"


async def database_change(database: dict[str, Any], sql: str, params: Sequence[Any] = (),
                          past_append_only: bool = False) -> None:
    if database_backend(database) == "sqlite":
        await asyncio.to_thread(_sqlite_change, _sqlite_path(database), sql, tuple(params), past_append_only)
        return
    conn = await _pg_connection(database)
    try:
        await conn.execute("BEGIN")  # the bot's writer lock too: never between two of its writes
        try:
            for table in APPEND_ONLY_TABLES if past_append_only else ():
                await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            await conn.execute(sql, params)
            for table in APPEND_ONLY_TABLES if past_append_only else ():
                await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    finally:
        await conn.close()


def _sqlite_change(path: str, sql: str, params: tuple, past_append_only: bool) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # The triggers are dropped and made again from their own SQL, in the same transaction.
            triggers = conn.execute(_SQLITE_APPEND_ONLY).fetchall() if past_append_only else []
            for name, _ in triggers:
                conn.execute(f"DROP TRIGGER {name}")
            conn.execute(sql, params)
            for _, create in triggers:
                conn.execute(create)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


async def database_texts_holding(database: dict[str, Any], needle: str) -> list[str]:
    """Every value of every table, as text: on SQLite each column, on PostgreSQL each row cast to
    text (every column's text form, a bytea's as hex, so the needle's hex is looked for too)."""
    hits = []
    if database_backend(database) == "sqlite":
        tables = [name for (name,) in await database_rows(database, "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in await database_rows(database, f'SELECT * FROM "{table}"'):
                hits += [table for value in row
                         if (isinstance(value, str) and needle in value) or (isinstance(value, bytes) and needle.encode() in value)]
        return hits
    conn = await _pg_connection(database)
    try:
        tables = [r["table_name"] for r in await conn.raw.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_type = 'BASE TABLE'")]
        for table in tables:
            for (text,) in await conn.raw.fetch(f'SELECT t::text FROM "{table}" t'):
                if needle in text or needle.encode().hex() in text:
                    hits.append(table)
    finally:
        await conn.close()
    return hits
async def assert_not_stored(bot: BotProcess, secrets: Sequence[str], control: str) -> None:
    """None of ``secrets`` (nor its lower-case form) anywhere the bot's records are: on SQLite in
    the database's files byte for byte, its WAL included; on PostgreSQL (whose files are the
    server's, shared by every test's database) in any value of any row. ``control``, something the
    records do hold, must be found the same way: a scan that sees nothing proves nothing."""
    needles = {s for s in secrets} | {s.lower() for s in secrets}
    if bot.backend == "sqlite":
        database = Path(_sqlite_path(bot.config["database"]))
        files = {path: path.read_bytes() for path in database.parent.glob(database.name + "*")}
        assert any(path.name.endswith("-wal") for path in files), list(files)  # the WAL is looked at too
        assert any(control.encode() in data for data in files.values()), f"{control} in none of {list(files)}"
        for path, data in files.items():
            assert not any(n.encode() in data for n in needles), path
        return
    assert await bot.texts_holding(control), f"{control} in no row"
    for needle in needles:
        assert not await bot.texts_holding(needle), needle
# --- end of the bot's database on either backend ---
