"""The fault suite's machinery: a seeded script of mixed events, one run of it against a fresh
homeserver and the bot as a real process (with or without faults), and the comparison of two runs.

Everything a run records is reduced to what must not depend on timing: IDs of rooms and events are
replaced by their role or script index, timestamps are dropped, durations are kept. Two runs of one
script must then give equal multisets; what one has more of is lost (or duplicated) by the other.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.devserver import Homeserver, RegisteredUser
from tests.integration.harness import BotProcess, database_backend, database_rows

CASE_NUMBER = re.compile(r"#\d+")
NEWS = "The State Council met today"  # news by the shipped rules; nobody in the script has a tier
WORDS = ("lunch", "weather", "garden", "bicycle", "tea", "music", "river", "bread", "chess", "autumn")
FAST_HS = {"bcrypt_rounds": 4}  # 45 accounts per run: Synapse's default hashing would take a minute


# ---------------------------------------------------------------- the script

@dataclass
class Step:
    """One event of the stream. ``needs`` names what the text waits for: a case, a closure code, a
    report (these are read from the bot's database, as a moderator reads them from its replies)."""
    index: int
    at: float           # seconds after the stream starts
    sender: str         # role: mod, a0, n3, v7 …
    room: str           # management, protected, dm
    text: str           # may hold {case}, {code}, {report}, {link}
    needs: tuple[str, ...] = ()


@dataclass
class Script:
    seed: int
    steps: list[Step]
    roles: dict[str, list[str]]  # group -> role names
    beat: float                  # seconds between two bursts of the stream

    def localpart(self, role: str) -> str:
        return f"fx{self.seed}-{role}"

    def user_id(self, role: str) -> str:
        return f"@{self.localpart(role)}:localhost"

    @property
    def all_roles(self) -> list[str]:
        return [r for group in self.roles.values() for r in group]


def make_script(seed: int, events: int = 210, duration: float = 40.0, burst: int = 10) -> Script:
    """A stream of ``events`` events over ``duration`` seconds in bursts of ``burst`` sent back to
    back (the bot is then busy with a batch when a kill lands), the same for every run of one seed.

    Each account plays one part so that no outcome depends on the order in which the bot reads two
    rooms: violators post once (a muted account's second post would be refused or not depending on
    timing), newcomers only agree, chatters are warned at most once (the ladder restricts at three
    warnings), and the moderator's commands on one target keep their order.
    """
    rng = random.Random(seed)
    roles = {
        "mod": ["mod"],
        "chatters": [f"a{i}" for i in range(4)],
        "newcomers": [f"n{i}" for i in range(6)],
        "violators": [f"v{i}" for i in range(12)],
        "targets": [f"t{i}" for i in range(21)],
    }
    uid = lambda role: f"@fx{seed}-{role}:localhost"  # noqa: E731

    def item(sender: str, room: str, text: str, needs: tuple[str, ...] = (), target: str | None = None,
             key: str | None = None) -> dict[str, Any]:
        return {"sender": sender, "room": room, "text": text, "needs": needs, "target": target, "key": key}

    # The measures that must end (or be lifted) during the run come first.
    first = [item("mod", "management", f"!restrict {uid(t)} 1m flooding the lobby", target=t) for t in ("t0", "t1", "t2")]
    first += [item("mod", "management", f"!suspend {uid(t)} 2m suspicious invitations", target=t) for t in ("t3", "t4")]
    first.append(item("mod", "management", f"!restrict {uid('t5')} 10m spam links", target="t5"))
    first.append(item("mod", "management", f"!suspend {uid('t20')} 1h still in force at the end", target="t20"))
    body = [item("mod", "management", f"!lift {{case}} appeal granted for {t}", (f"case:{t}:suspend",), t)
            for t in ("t3", "t4")]
    body.append(item("mod", "management", "!lift {case} served enough", ("case:t5:restrict",), "t5"))
    for t in ("t6", "t7"):
        body.append(item("mod", "management", f"!close {uid(t)} repeated serious violations", target=t))
        body.append(item("mod", "management", "!confirm {code}", (f"code:{t}",), t))
    for t in roles["targets"][8:20]:
        for k in range(rng.randint(1, 5)):  # three within 90 days: the ladder restricts for 24 h
            body.append(item("mod", "management", f"!warn {uid(t)} rude remark number {k}", target=t))
    body += [item(v, "protected", f"hello from {v}, I have not agreed") for v in roles["violators"]]
    body += [item(n, "dm", "!agree") for n in roles["newcomers"]]
    body += [item(rng.choice(roles["chatters"]), "protected", f"{NEWS}: item {k}") for k in range(24)]
    chat_count = events - len(first) - len(body) - 16  # 8 reports and their 8 resolutions
    assert chat_count >= 60, "the script needs room for chatter"
    chats = [item(rng.choice(roles["chatters"]), "protected", f"chat {k}: {rng.choice(WORDS)} and {rng.choice(WORDS)}",
                  key=f"chat{k}") for k in range(chat_count)]
    pool = body + chats
    rng.shuffle(pool)
    # Each target's commands keep their written order (a confirmation after its closure, and so on).
    queues: dict[str, list] = {}
    for it in body:
        if it["target"]:
            queues.setdefault(it["target"], []).append(it)
    ordered = [queues[it["target"]].pop(0) if it["target"] else it for it in pool]
    ordered = first + ordered
    # Eight chatter posts are reported right after they are posted, and resolved later; a warning
    # goes to each chatter at most once.
    reported = rng.sample([it["key"] for it in chats[:60]], 8)
    warned = iter(roles["chatters"])
    for n, key in enumerate(reported):
        at = next(i for i, it in enumerate(ordered) if it["key"] == key)
        ordered.insert(at + 1, item("mod", "management", "!report {link} offensive, please look", (f"event:{key}",)))
        text = (f"!resolve {{report}} warn {uid(next(warned))} reported and confirmed" if n % 2 == 0
                else "!resolve {report} dismiss nothing wrong here")
        ordered.insert(rng.randint(at + 2, len(ordered)), item("mod", "management", text, (f"report:{key}",)))
    index_of = {it["key"]: i for i, it in enumerate(ordered) if it["key"]}

    def resolve(need: str) -> str:
        kind, _, arg = need.partition(":")
        return f"{kind}:{index_of[arg]}" if kind in ("event", "report") else need

    beat = duration / -(-len(ordered) // burst)
    steps = [Step(i, beat * (i // burst), it["sender"], it["room"], it["text"],
                  tuple(resolve(x) for x in it["needs"])) for i, it in enumerate(ordered)]
    return Script(seed, steps, roles, beat)


# ---------------------------------------------------------------- one run

@dataclass
class Figures:
    sent: int = 0
    refused: int = 0
    kills: int = 0
    faults: list[str] = field(default_factory=list)


class Run:
    """One fresh homeserver, one bot process, one pass of the script."""

    def __init__(self, script: Script, workdir: Path, *, faults: bool, database: dict[str, str] | None = None) -> None:
        self.script = script
        self.workdir = workdir
        # The bot's database section: a file in the run's folder unless the test gives another.
        self.database = database or {"path": str(workdir / "bot.db")}
        self.faulty = faults
        self.hs = Homeserver(workdir / "hs", extra_config=FAST_HS)
        self.accounts: dict[str, RegisteredUser] = {}
        self.rooms: dict[str, str] = {}          # management, protected, dm:<role>
        self.event_ids: dict[int, str] = {}      # step index -> event ID
        self.figures = Figures()
        self.hs_up = asyncio.Event()
        self.bot: BotProcess | None = None
        self.bot_account: RegisteredUser | None = None
        self.session: aiohttp.ClientSession | None = None
        self.log: list[str] = []
        # Seconds from the start of the stream to the end of the run, whatever happens: the 1-minute
        # restrictions end at about 65 s; a faulted run that has lost something never settles.
        self.budget = 140.0
        self.deadline = time.monotonic() + 600
        self.timings: dict[str, float] = {}
        self.writer_lock_waits = 0  # PostgreSQL: the most bot sessions seen waiting for the held lock

    # -- plumbing
    async def call(self, token: str, method: str, path: str, body: Any = None, *, retry: bool = True) -> tuple[int, Any]:
        """One client-server call; waits out a homeserver restart and retries 429 and 5xx."""
        assert self.session is not None
        for attempt in range(200):
            await self.hs_up.wait()
            try:
                async with self.session.request(method, self.hs.url + path, json=body,
                                                headers={"Authorization": f"Bearer {token}"}) as resp:
                    data = await resp.json(content_type=None)
                    if retry and (resp.status == 429 or resp.status >= 500):
                        await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
                        continue
                    return resp.status, data
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                if not retry:
                    raise
                await asyncio.sleep(0.3)
        raise AssertionError(f"{method} {path}: no answer after 200 tries")

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def token(self, role: str) -> str:
        return self.accounts[role].access_token

    async def send(self, role: str, room_id: str, text: str, txn: str) -> str | None:
        status, data = await self.call(self.token(role), "PUT",
                                       f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                                       {"msgtype": "m.text", "body": text})
        if status == 200:
            return data["event_id"]
        self.figures.refused += 1
        self.log.append(f"{role} refused ({status} {data}) for {text!r}")
        return None

    async def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Read the bot's database as a moderator would read its replies (never blocks the bot);
        nothing while the bot has not made it yet."""
        if database_backend(self.database) == "sqlite" and not Path(self.database["path"]).exists():
            return []
        try:
            return await database_rows(self.database, sql, args)
        except sqlite3.OperationalError:  # no such table yet (PostgreSQL's errors come in this shape too)
            return []

    async def wait_db(self, sql: str, args: tuple, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = await self.query(sql, args)
            if rows and rows[0][0] is not None:
                return rows[0][0]
            await asyncio.sleep(0.3)
        return None

    async def wait_reply(self, after_ms: int, contains: str, timeout: float) -> bool:
        """The bot answered in the management room (something containing ``contains``) after a moment."""
        deadline = time.monotonic() + timeout
        room = quote(self.rooms["management"])
        while time.monotonic() < deadline:
            status, data = await self.call(self.token("mod"), "GET",
                                           f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=30")
            for event in data.get("chunk", []) if status == 200 else []:
                if (event.get("sender") == self.bot_account.user_id and event.get("origin_server_ts", 0) >= after_ms
                        and contains in event.get("content", {}).get("body", "")):
                    return True
            await asyncio.sleep(0.5)
        return False

    # -- setup
    async def setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.hs.start)
        self.hs_up.set()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.bot_account = await self.hs.register("rulesbot", "rulesbot-password", admin=True)
        self.accounts["operator"] = await self.hs.register(self.script.localpart("operator"), admin=True)
        roles = self.script.all_roles
        registered = await asyncio.gather(*(self.hs.register(self.script.localpart(r)) for r in roles))
        self.accounts.update(zip(roles, registered))
        # Test accounts post fast; only the bot's own limit is ever lowered (the 429 burst).
        bot = self.bot_account.user_id
        alias = self.script.localpart("mods")
        status, room = await self.call(self.token("mod"), "POST", "/_matrix/client/v3/createRoom",
                                       {"name": "Moderators", "room_alias_name": alias, "invite": [bot]})
        assert status == 200, room
        self.rooms["management"] = room["room_id"]
        status, room = await self.call(self.token("mod"), "POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "name": "Protected", "invite": [bot],
            "power_level_content_override": {"users": {bot: 100}},
        })
        assert status == 200, room
        self.rooms["protected"] = room["room_id"]
        members = [r for g in ("chatters", "newcomers", "violators") for r in self.script.roles[g]]
        members += ["t6", "t7"]  # the closures' bans show in the room
        await asyncio.gather(*(self.call(self.token(r), "POST", f"/_matrix/client/v3/join/{quote(self.rooms['protected'])}")
                               for r in members))
        self.bot = BotProcess({
            "homeserver": {"url": self.hs.url, "user_id": bot, "password": self.bot_account.password,
                           "admin_token": self.bot_account.access_token},
            "database": dict(self.database),
            "language": "en",
            "gate": {"enabled": False},
            "log_level": "INFO",
            "moderators": [self.script.user_id("mod")],
            "management_room": f"#{alias}:localhost",
            "protected_rooms": [self.rooms["protected"]],
        }, self.workdir)
        await asyncio.to_thread(self.bot.start, 60.0)
        # Chatters agree before the stream (their first post is redacted and teaches them how);
        # newcomers are shown the agreement the same way and agree during the stream.
        await asyncio.gather(*(self._onboard(r, agree=r.startswith("a"))
                               for r in self.script.roles["chatters"] + self.script.roles["newcomers"]))

    async def _onboard(self, role: str, agree: bool) -> None:
        await self.send(role, self.rooms["protected"], f"first words of {role}", f"setup-{role}")
        bot = self.bot_account.user_id
        dm = None
        deadline = time.monotonic() + 60
        since = None
        while dm is None and time.monotonic() < deadline:
            path = "/_matrix/client/v3/sync?timeout=1000" + (f"&since={since}" if since else "")
            status, data = await self.call(self.token(role), "GET", path)
            since = data.get("next_batch", since)
            for room_id, info in data.get("rooms", {}).get("invite", {}).items():
                if any(e.get("sender") == bot for e in info.get("invite_state", {}).get("events", [])):
                    dm = room_id
        assert dm, f"{role}: no DM from the bot"
        status, data = await self.call(self.token(role), "POST", f"/_matrix/client/v3/join/{quote(dm)}")
        assert status == 200, data
        self.rooms[f"dm:{role}"] = dm
        if agree:
            await self.send(role, dm, "!agree", f"setup-agree-{role}")
            version = await self.wait_db("SELECT version FROM agreement_acceptances WHERE user_id = ?",
                                         (self.script.user_id(role),), 60)
            assert version, f"{role}: the setup agreement was not recorded"
            # The acceptance is committed before its unmute is carried out: wait for the room to
            # let the account post, or its first chat line could meet the mute on a loaded machine.
            assert await self._may_post(role, 60), f"{role}: still muted after agreeing"

    async def _may_post(self, role: str, timeout: float) -> bool:
        path = f"/_matrix/client/v3/rooms/{quote(self.rooms['protected'])}/state/m.room.power_levels/"
        user_id = self.script.user_id(role)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, levels = await self.call(self.token("mod"), "GET", path)
            if status == 200:
                needed = (levels.get("events") or {}).get("m.room.message", levels.get("events_default", 0))
                if (levels.get("users") or {}).get(user_id, levels.get("users_default", 0)) >= needed:
                    return True
            await asyncio.sleep(0.3)
        return False

    # -- the stream
    async def play(self, rng: random.Random | None) -> None:
        """Send the script; with ``rng``, faults run beside it at seeded moments."""
        started = time.monotonic()
        self.deadline = started + self.budget
        faults = asyncio.create_task(self._faults(rng, started)) if rng else None
        dependents: list[asyncio.Task] = []
        for step in self.script.steps:
            delay = started + step.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if step.needs:
                dependents.append(asyncio.create_task(self._dependent(step)))
            else:
                await self._send_step(step, step.text)
        await asyncio.gather(*dependents)
        if faults:
            await faults

    async def _send_step(self, step: Step, text: str) -> None:
        room = self.rooms[f"dm:{step.sender}"] if step.room == "dm" else self.rooms[step.room]
        event_id = await self.send(step.sender, room, text, f"fx-{self.script.seed}-{step.index}")
        if event_id:
            self.event_ids[step.index] = event_id
            self.figures.sent += 1

    async def _dependent(self, step: Step) -> None:
        """A command that names something the bot made (a case, a code, a report): sent once the
        bot has recorded it, or never (then the run lost it and the comparison shows it)."""
        values: dict[str, Any] = {}
        for need in step.needs:
            kind, _, arg = need.partition(":")
            if kind == "case":
                target, case_kind = arg.split(":")
                values["case"] = await self.wait_db("SELECT MIN(id) FROM cases WHERE target = ? AND kind = ?",
                                                    (self.script.user_id(target), case_kind), self.left())
            elif kind == "code":
                values["code"] = await self.wait_db("SELECT code FROM closure_requests WHERE target = ? ORDER BY created_at",
                                                    (self.script.user_id(arg),), self.left())
            elif kind == "event":
                deadline = self.deadline
                while int(arg) not in self.event_ids and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                event_id = self.event_ids.get(int(arg))
                values["link"] = event_id and f"https://matrix.to/#/{self.rooms['protected']}/{event_id}"
            elif kind == "report":
                deadline = self.deadline
                while int(arg) not in self.event_ids and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                event_id = self.event_ids.get(int(arg))
                values["report"] = event_id and await self.wait_db(
                    "SELECT id FROM reports WHERE event_id = ?", (event_id,), self.left())
        if any(v is None for v in values.values()):
            self.log.append(f"step {step.index} never sent: {step.needs} not found")
            return
        await self._send_step(step, step.text.format(**values))

    # -- faults
    async def _faults(self, rng: random.Random, started: float) -> None:
        """Seeded faults, one after another (a restart of the bot re-lifts its rate limit, so the
        429 window must not overlap a kill): five or more SIGKILLs, a homeserver restart, the
        database locked for 10 s, and a burst of 429s."""
        plan = [("kill", rng.uniform(2, 38)) for _ in range(rng.randint(5, 6))]
        # The 429 burst early, while the stream surely runs (a bot with nothing to send meets no limit).
        plan += [("429", rng.uniform(2, 12)), ("lock", rng.uniform(10, 30)), ("homeserver", rng.uniform(15, 35))]
        plan.sort(key=lambda p: p[1])
        beat = self.script.beat
        for what, at in plan:
            if what in ("kill", "429"):
                # A kill lands 0.05-1 s into a burst, while the bot works through it (a kill at a
                # quiet moment tests little); the next burst if this one has already begun.
                burst = max(at, time.monotonic() - started) // beat + 1
                at = burst * beat + rng.uniform(0.05, 1.0)
            delay = started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.monotonic() - started
            if what == "kill":
                await asyncio.to_thread(self.bot.stop, signal.SIGKILL)
                self.figures.kills += 1
                await asyncio.to_thread(self.bot.start, 90.0)
            elif what == "homeserver":
                self.hs_up.clear()
                await asyncio.to_thread(self.hs.restart)
                self.hs_up.set()
            elif what == "lock":
                await self._lock_database(10.0)
            elif what == "429":
                await self._rate_limit_bot(10.0)
            self.figures.faults.append(f"{what}@{t:.1f}s")

    async def _lock_database(self, seconds: float) -> None:
        if database_backend(self.database) == "postgres":
            await self._hold_writer_lock(seconds)
            return
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sqlite3, sys, time\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
             "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
             "time.sleep(float(sys.argv[2])); c.execute('COMMIT')\n",
             self.database["path"], str(seconds)],
            stdout=subprocess.PIPE,
        )
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.strip() == b"locked", line
        code = await asyncio.to_thread(holder.wait, seconds + 60)
        assert code == 0, f"the lock holder exited with {code}"

    async def _hold_writer_lock(self, seconds: float) -> None:
        """PostgreSQL's counterpart of SQLite's exclusive lock: another session holds the lock every
        write transaction of the bot takes first (bot.store.pg.WRITER_LOCK), so every write waits.
        The bot's sessions seen waiting for it are counted: proof the fault bit."""
        import asyncpg

        from bot.store.pg import WRITER_LOCK

        holder = await asyncpg.connect(self.database["url"])
        watcher = await asyncpg.connect(self.database["url"])
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK)
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    waiting = await watcher.fetchval(
                        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
                    self.writer_lock_waits = max(self.writer_lock_waits, waiting)
                    await asyncio.sleep(0.2)
        finally:
            await holder.close()
            await watcher.close()

    async def _rate_limit_bot(self, seconds: float) -> None:
        path = f"/_synapse/admin/v1/users/{quote(self.bot_account.user_id)}/override_ratelimit"
        status, data = await self.call(self.token("operator"), "POST", path,
                                       {"messages_per_second": 1, "burst_count": 1})
        assert status == 200, data
        await asyncio.sleep(seconds)
        status, data = await self.call(self.token("operator"), "POST", path,
                                       {"messages_per_second": 0, "burst_count": 0})
        assert status == 200, data

    # -- the end
    async def settle(self) -> bool:
        """Quiescence: the 1-minute restrictions have ended, the bot has answered a last command,
        and its records have not changed for 5 s (or the run's time is up)."""
        deadline = self.deadline
        ended = await self.wait_db(
            "SELECT 1 FROM (SELECT COUNT(*) AS n FROM cases c JOIN case_ends e ON e.case_id = c.id "
            "WHERE c.kind = 'restrict' AND e.how = 'expired' AND c.target IN (?, ?, ?)) AS ended WHERE n >= 3",
            tuple(self.script.user_id(t) for t in ("t0", "t1", "t2")), max(1.0, deadline - time.monotonic()))
        now_ms = int(time.time() * 1000) - 2000
        status, _ = await self.call(self.token("mod"), "PUT",
                                    f"/_matrix/client/v3/rooms/{quote(self.rooms['management'])}/send/m.room.message/fx-last",
                                    {"msgtype": "m.text", "body": "!cases active"})
        answered = await self.wait_reply(now_ms, "", max(1.0, deadline - time.monotonic()))
        last, stable_since = None, time.monotonic()
        while time.monotonic() < deadline:
            current = await self.records()
            # Records alone can rest while the effects journal still carries out what they imply.
            pending = await self.query("SELECT COUNT(*) FROM effects WHERE status = 'pending'")
            if current != last or (pending and pending[0][0]):
                last, stable_since = current, time.monotonic()
            elif time.monotonic() - stable_since >= 5:
                break
            await asyncio.sleep(1)
        return bool(ended) and answered

    def _role_of(self) -> dict[str, str]:
        names = {self.script.user_id(r): r for r in self.script.all_roles}
        names[self.bot_account.user_id] = "bot"
        names.update({room_id: role for role, room_id in self.rooms.items()})
        names.update({event_id: f"step{n}" for n, event_id in self.event_ids.items()})
        return names

    def _norm(self, value: Any, names: dict[str, str] | None = None) -> Any:
        """IDs of this run's rooms, events and reports replaced by their roles, and case numbers in
        text dropped (a lost case renumbers the rest); user IDs are the same in both runs."""
        names = names if names is not None else self._role_of()
        if isinstance(value, str):
            value = CASE_NUMBER.sub("#n", value)
            if value in names and not value.startswith("@"):
                return names[value]
            if value.startswith("!"):
                return "!other-room"
            if value.startswith("$"):
                return "$other-event"
        return value

    async def records(self) -> dict[str, Counter]:
        """What the bot recorded, as multisets of facts without IDs or times."""
        q = self.query
        names = self._role_of()
        for report_id, event_id in await q("SELECT id, event_id FROM reports"):
            names[f"report:{report_id}"] = f"report:{names.get(event_id, '$other-event')}"
        n = lambda value: self._norm(value, names)  # noqa: E731
        cases = await q("SELECT c.kind, c.target, c.actor, c.reason, c.created_at, c.expires_at, c.rate, c.caused_by, "
                        "e.how, e.actor, e.reason FROM cases c LEFT JOIN case_ends e ON e.case_id = c.id")
        closures = await q("SELECT target, requested_by, reason, used_at FROM closure_requests")
        agreements = await q("SELECT user_id, version, method FROM agreement_acceptances")
        reports = await q("SELECT event_id, sender, resolved_by, resolution, resolution_reason, case_id FROM reports")
        effects = await q("SELECT kind, target, status FROM effects")
        audit = await q("SELECT action, actor, target FROM audit_log")
        out: dict[str, Counter] = {}
        out["cases"] = Counter(
            (kind, target, actor, n(reason), None if exp is None else round((exp - created) / 1000), rate,
             len(json.loads(caused)), how, end_actor, None if end_reason is None else n(end_reason))
            for kind, target, actor, reason, created, exp, rate, caused, how, end_actor, end_reason in cases)
        out["closure requests"] = Counter(
            (target, by, reason, used is not None) for target, by, reason, used in closures)
        out["agreements"] = Counter((user, version, method) for user, version, method in agreements)
        out["reports"] = Counter(
            (n(event_id), sender, resolved_by, resolution, resolution_reason, case_id is not None)
            for event_id, sender, resolved_by, resolution, resolution_reason, case_id in reports)
        out["reporters"] = Counter(await q("SELECT reporter, reason, source FROM report_reporters"))
        # The effects journal (where there is one): each intent once, and carried out.
        out["effects"] = Counter((kind, n(target), status) for kind, target, status in effects)
        out["audit actions"] = Counter((action, actor, n(target)) for action, actor, target in audit)
        return out

    async def room_state(self) -> dict[str, Any]:
        """Mutes (power levels), bans, redactions of the stream's posts, and Synapse's own view of
        every account (suspended, deactivated)."""
        room = quote(self.rooms["protected"])
        status, state = await self.call(self.token("mod"), "GET", f"/_matrix/client/v3/rooms/{room}/state")
        assert status == 200, state
        levels = next(e["content"] for e in state if e["type"] == "m.room.power_levels")
        names = self._role_of()
        mutes = {names.get(u, u): lvl for u, lvl in levels.get("users", {}).items()}
        bans = sorted(names.get(e["state_key"], e["state_key"]) for e in state
                      if e["type"] == "m.room.member" and e["content"].get("membership") == "ban")
        redacted = []
        for step in self.script.steps:
            if step.room == "protected" and step.index in self.event_ids:
                status, event = await self.call(self.token("mod"), "GET",
                                                f"/_matrix/client/v3/rooms/{room}/event/{quote(self.event_ids[step.index])}")
                if status == 200 and not event.get("content"):
                    redacted.append(step.index)
        accounts = {}
        for role in self.script.all_roles:
            status, user = await self.call(self.token("operator"), "GET",
                                           f"/_synapse/admin/v2/users/{quote(self.script.user_id(role))}")
            accounts[role] = (bool(user.get("suspended")), bool(user.get("deactivated")))
        return {"power levels (mutes)": mutes, "bans": bans, "redacted steps": redacted, "accounts": accounts,
                "refused sends": self.figures.refused}

    def evidence(self) -> dict[str, int]:
        """Proof the faults bit: the homeserver's 429 answers to the bot, and the bot meeting the lock."""
        hs_log = self.hs.log_path.read_text("utf-8", "replace") if self.hs.log_path.exists() else ""
        bot_log = self.bot.log() if self.bot is not None else ""
        bot = self.bot_account.user_id if self.bot_account else "?"
        return {
            "429s to the bot": sum(1 for line in hs_log.splitlines() if bot in line and " 429 " in line),
            "bot log lines on the locked database": bot_log.count("database is locked"),
            "bot sessions seen waiting for the held writer lock": self.writer_lock_waits,
        }

    async def close(self) -> None:
        if self.bot is not None:
            await asyncio.to_thread(self.bot.stop)
        if self.session is not None:
            await self.session.close()
        await asyncio.to_thread(self.hs.stop)


def state_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The rooms' and accounts' state where two runs differ, one line per difference."""
    lines = []
    for key in a:
        x, y = a[key], b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            lines += [f"  {key}: {k}: {x.get(k)} vs {y.get(k)}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif isinstance(x, list) and isinstance(y, list) and x != y:
            lines += [f"  {key}: only undisturbed {sorted(set(x) - set(y))}, only faulted {sorted(set(y) - set(x))}"]
        elif x != y:
            lines.append(f"  {key}: {x} vs {y}")
    return lines


def compare(a: dict[str, Counter], b: dict[str, Counter]) -> tuple[int, int, list[str]]:
    """(lost, duplicated, lines): what ``b`` lacks of ``a``, and what it has twice where ``a`` has it once
    (or has at all where ``a`` has not)."""
    lost = duplicated = 0
    lines = []
    for name in a:
        missing, extra = a[name] - b[name], b[name] - a[name]
        lost += sum(missing.values())
        duplicated += sum(extra.values())
        lines += [f"  {name}: lost {fact} x{k}" for fact, k in missing.items()]
        lines += [f"  {name}: extra {fact} x{k}" for fact, k in extra.items()]
    return lost, duplicated, lines
