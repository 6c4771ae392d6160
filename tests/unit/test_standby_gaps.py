"""Issue 11's last gaps on a hot standby (bot.standby), each against an active bot's real gate:
consent at registration is asked of the active, and a signed identity assertion is relayed to it,
usable once whichever process it is sent to."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from types import SimpleNamespace

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.consent.registration import FAILED_FOR_MS, LOOKUP_TIMEOUT_S, NEGATIVE_FOR_MS, LookupFailed, RegistrationConsent
from bot.gate.server import Gate
from bot.i18n import Translator
import bot.identity.assertion as assertion_module
from bot.identity.assertion import RELAYED_HEADER, identity_endpoint
from bot.identity.service import Identity
from bot.replica.changelog import ChangeLog
from bot.replica.publisher import ReplicaPublisher
from bot.standby import LEADER_KEY, ConsentViaActive, GateBinding, Standby
from bot.store import Store
from tests.unit.test_identity import settings_for
from tests.unit.test_identity_gate import NOW, PATH, SECRET, TABLES, assertion, signed
from tests.unit.test_leader_standby import AUTH, TOKEN, ProductionServer, new_state, post, until

ALICE = "@alice:hs.test"  # agreed at registration, in Synapse's user_consent
NEWCOMER = "@newcomer:hs.test"  # did not
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens there


def refused_as_not_agreed(status: int, body: dict) -> bool:
    return status == 403 and body["errcode"] == "M_FORBIDDEN" and "agree" in body["error"].lower()


async def serve(app: web.Application) -> TestClient:
    """``app`` served as production serves it: a handler whose client left runs to its end."""
    client = TestClient(ProductionServer(app))
    await client.start_server()
    return client


def url_of(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def stand_by(store: Store, active: TestClient, gate: Gate, consent_timeout: float | None = None
                   ) -> tuple[Standby, GateBinding, ConsentViaActive | None]:
    """A standby following ``active`` (advertised in ``store``), its gate bound as bot.ha binds it;
    asking the active about consent at registration only with a ``consent_timeout``."""
    await store.put(LEADER_KEY, orjson.dumps({"url": url_of(active)}).decode())
    standby = Standby(store, TOKEN, "http://standby.invalid")
    await standby.read_leader()
    await standby.open()
    consent = None if consent_timeout is None else ConsentViaActive(standby, lambda: gate.state, consent_timeout)
    binding = GateBinding(gate)
    binding.standby(gate.state, standby.outbox, lambda: {}, consent=consent, relay_to=standby)
    return standby, binding, consent


async def close_all(*things) -> None:
    for thing in things:
        await thing.close()


# --- gap 1: consent at registration ------------------------------------------------------------------


@pytest.fixture
async def consent_pair(tmp_path):
    # The active bot: its gate's consent hook is the service's (it reads Synapse's user_consent and
    # records a yes), faked here with the same effect.
    active_state = new_state()
    active_gate = Gate(active_state, Translator("en"), TOKEN, lambda user: None)
    active_gate.replica = ReplicaPublisher(ChangeLog(active_state), active_gate, lambda: int(time.time() * 1000))
    asked: list[str] = []

    async def service_consent(user_id: str) -> bool:
        asked.append(user_id)
        if user_id != ALICE:
            return False
        active_state.record_acceptance(user_id, "1")
        return True

    active_gate.consent = service_consent
    active = await serve(active_gate.app())
    store = await Store.open(tmp_path / "bot.db")
    # The standby: it decides from the state it loaded at start, which knows nobody's agreement.
    standby_state = new_state()
    standby_gate = Gate(standby_state, Translator("en"), TOKEN, lambda user: None)
    standby_gate.replica = ReplicaPublisher(ChangeLog(standby_state), standby_gate, lambda: int(time.time() * 1000))
    standby, binding, consent = await stand_by(store, active, standby_gate, consent_timeout=LOOKUP_TIMEOUT_S)
    gate = await serve(standby_gate.app())
    yield SimpleNamespace(gate=gate, asked=asked, active_state=active_state, standby_state=standby_state,
                          standby=standby, consent=consent, binding=binding, store=store)
    await close_all(gate, standby, active, store)


async def send(gate: TestClient, user: str, event_id: str) -> tuple[int, dict]:
    answer = await gate.post("/antispam/check_event_for_spam", json=post(user, event_id), headers=AUTH)
    return answer.status, await answer.json()


async def test_an_account_that_agreed_at_registration_is_let_through_by_the_standby(consent_pair) -> None:
    # Before: the standby's gate had no consent hook and refused ALICE's first message as not agreed.
    assert await send(consent_pair.gate, ALICE, "$first") == (200, {})
    assert consent_pair.asked == [ALICE]  # the active was asked, and recorded it
    assert consent_pair.active_state.has_agreed(ALICE)
    assert consent_pair.standby_state.has_agreed(ALICE)  # at once, before the replica brings it
    assert consent_pair.standby.outbox.items == []  # no agreement prompt for her
    assert await send(consent_pair.gate, ALICE, "$second") == (200, {})
    assert consent_pair.asked == [ALICE]  # a yes is never asked again


async def test_a_no_from_the_active_is_kept_as_the_actives_own_lookup_keeps_it(consent_pair) -> None:
    assert refused_as_not_agreed(*await send(consent_pair.gate, NEWCOMER, "$1"))
    assert refused_as_not_agreed(*await send(consent_pair.gate, NEWCOMER, "$2"))
    assert consent_pair.asked == [NEWCOMER]  # one question, not one per refused post
    consent_pair.consent._clock = lambda: int(time.monotonic() * 1000) + NEGATIVE_FOR_MS + 1
    assert refused_as_not_agreed(*await send(consent_pair.gate, NEWCOMER, "$3"))
    assert consent_pair.asked == [NEWCOMER, NEWCOMER]  # asked again once the "no" is old


async def test_an_unreachable_active_leaves_the_refusal_and_says_so_in_the_log(consent_pair, caplog) -> None:
    await consent_pair.store.put(LEADER_KEY, orjson.dumps({"url": UNREACHABLE}).decode())
    await consent_pair.standby.read_leader()
    with caplog.at_level(logging.WARNING, logger="bot.standby"):
        assert refused_as_not_agreed(*await send(consent_pair.gate, ALICE, "$1"))
    assert f"no answer from the active bot ({UNREACHABLE}) whether {ALICE} accepted the agreement" in caplog.text
    assert "refused as not agreed for now" in caplog.text
    assert not consent_pair.standby_state.has_agreed(ALICE)
    # Kept for FAILED_FOR_MS, as the active keeps an admin API that did not answer.
    caplog.clear()
    assert refused_as_not_agreed(*await send(consent_pair.gate, ALICE, "$2"))
    assert caplog.text == "" and consent_pair.consent.lookups == 1
    consent_pair.consent._clock = lambda: int(time.monotonic() * 1000) + FAILED_FOR_MS + 1
    assert refused_as_not_agreed(*await send(consent_pair.gate, ALICE, "$3"))
    assert consent_pair.consent.lookups == 2


async def test_an_active_that_does_not_answer_in_time_leaves_the_refusal(tmp_path, caplog) -> None:
    # The same time limit as the active's own lookup: the gate never waits longer.
    async def stuck(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({"accepted": True})

    app = web.Application()
    app.router.add_post("/replica/v1/consent", stuck)
    active = await serve(app)
    store = await Store.open(tmp_path / "bot.db")
    gate = Gate(new_state(), Translator("en"), TOKEN, lambda user: None)
    standby, _, _ = await stand_by(store, active, gate, consent_timeout=0.2)
    client = await serve(gate.app())
    try:
        started = time.monotonic()
        assert refused_as_not_agreed(*await send(client, ALICE, "$1"))
        assert time.monotonic() - started < 1.0
        assert "no answer from the active bot" in caplog.text and "TimeoutError" in caplog.text
    finally:
        await close_all(client, standby, active, store)


async def test_a_synapse_module_asking_the_standby_gets_the_actives_answer(consent_pair) -> None:
    # The in-process module may follow either process: the standby's answer is the active's.
    answer = await consent_pair.gate.post("/replica/v1/consent", json={"user_id": ALICE}, headers=AUTH)
    assert await answer.json() == {"accepted": True, "version": "1"}
    answer = await consent_pair.gate.post("/replica/v1/consent", json={"user_id": NEWCOMER}, headers=AUTH)
    assert await answer.json() == {"accepted": False}
    assert consent_pair.asked == [ALICE, NEWCOMER]


async def test_an_active_that_could_not_check_is_asked_again_as_soon_as_it_would_ask_again(tmp_path) -> None:
    # review 11b, break 4: the active's failed lookup reached the standby as a plain "no", kept a
    # minute, while the active's own gate asks Synapse again after FAILED_FOR_MS.
    now = [1_000_000]
    active_state = new_state()
    admin_api_down = [True]

    async def admin_user(user_id):  # Synapse's admin API: ALICE consented to version "1"
        if admin_api_down[0]:
            raise LookupFailed("ClientConnectorError")
        return {"consent_version": "1", "consent_ts": 1} if user_id == ALICE else {}

    async def accept(user_id, version, accepted_at):
        active_state.record_acceptance(user_id, version)
        return True

    checker = RegistrationConsent(admin_user, accept, lambda: "1", active_state.is_local, lambda: now[0])
    active_gate = Gate(active_state, Translator("en"), TOKEN, lambda user: None)
    active_gate.replica = ReplicaPublisher(ChangeLog(active_state), active_gate, lambda: int(time.time() * 1000))
    active_gate.consent = checker.answer  # the active's own lookup, as bot.consent wires it
    active = await serve(active_gate.app())
    store = await Store.open(tmp_path / "bot.db")
    standby_gate = Gate(new_state(), Translator("en"), TOKEN, lambda user: None)
    standby, _, consent = await stand_by(store, active, standby_gate, consent_timeout=LOOKUP_TIMEOUT_S)
    consent._clock = lambda: now[0]
    gate = await serve(standby_gate.app())
    try:
        # The wire: "could not check" is not "no".
        answer = await active.post("/replica/v1/consent", json={"user_id": ALICE}, headers=AUTH)
        assert await answer.json() == {"accepted": False, "unknown": True, "retry_after_ms": FAILED_FOR_MS}
        assert refused_as_not_agreed(*await send(gate, ALICE, "$1"))
        assert consent.lookups == 1
        admin_api_down[0] = False
        now[0] += FAILED_FOR_MS - 1
        assert refused_as_not_agreed(*await send(gate, ALICE, "$2"))
        assert consent.lookups == 1  # kept, as the active keeps its own failed lookup
        now[0] += 2
        assert await send(gate, ALICE, "$3") == (200, {})  # asked again after 10 s, not 60
        assert consent.lookups == 2 and active_state.has_agreed(ALICE)
        # A real "no" is still kept the minute.
        assert refused_as_not_agreed(*await send(gate, NEWCOMER, "$4"))
        now[0] += FAILED_FOR_MS + 1
        assert refused_as_not_agreed(*await send(gate, NEWCOMER, "$5"))
        assert consent.lookups == 3
    finally:
        await close_all(gate, standby, active, store)


async def test_taking_over_stops_asking_the_old_active(consent_pair) -> None:
    early = SimpleNamespace(state=new_state(), directory=None, prompt=lambda user: None,
                            published=lambda user, room: None)
    consent_pair.binding.active(early, lambda: {"role": "active"})
    assert consent_pair.binding.gate.consent is None  # until the service sets its own
    assert refused_as_not_agreed(*await send(consent_pair.gate, ALICE, "$1"))
    assert consent_pair.asked == []


# --- gap 2: identity assertions ----------------------------------------------------------------------


async def rows(store: Store) -> dict[str, int]:
    return {t: (await store.db.fetchone(f"SELECT COUNT(*) FROM {t}"))[0] for t in TABLES}


@pytest.fixture
async def identity_pair(store, backend, tmp_path):
    """Two processes on one database: the active's identity endpoint records; the standby's (its own
    store connection, its own state loaded at start) is bound as a standby's gate binds it."""
    secret_file = tmp_path / "assertion.secret"
    secret_file.write_bytes(SECRET)
    os.chmod(secret_file, 0o600)
    settings = settings_for(tmp_path, assertion_secret_file=str(secret_file))
    clock = lambda: NOW  # noqa: E731
    active_state = new_state()
    active_state.record_acceptance(ALICE, "1")  # an account the bot has seen
    active_identity = await Identity.open(settings, store, active_state, clock)
    active_gate = Gate(active_state, Translator("en"), TOKEN, lambda user: None)
    active_gate.identity_endpoint = identity_endpoint(active_identity, settings, clock)
    active = await serve(active_gate.app())

    location = store.db.conn._dsn if backend == "postgres" else tmp_path / "bot.db"
    standby_store = await Store.open(location, tmp_path / "standby.audit-head")
    standby_state = new_state()
    standby_state.record_acceptance(ALICE, "1")
    standby_identity = await Identity.open(settings, standby_store, standby_state, clock)
    standby_gate = Gate(standby_state, Translator("en"), TOKEN, lambda user: None)
    standby_gate.identity_endpoint = identity_endpoint(standby_identity, settings, clock)
    standby, binding, _ = await stand_by(standby_store, active, standby_gate)
    gate = await serve(standby_gate.app())
    yield SimpleNamespace(active=active, gate=gate, active_state=active_state, standby_state=standby_state,
                          store=store, standby_store=standby_store, standby=standby, binding=binding)
    await close_all(gate, standby, active, standby_store)


async def send_assertion(client: TestClient, raw: bytes, headers: dict) -> tuple[int, dict]:
    answer = await client.post(PATH, data=raw, headers=headers)
    return answer.status, await answer.json()


async def test_an_assertion_sent_to_the_standby_is_recorded_by_the_active(identity_pair) -> None:
    raw, headers = signed(assertion(assertion_id="a-1"))
    assert await send_assertion(identity_pair.gate, raw, headers) == (200, {"user_id": ALICE, "verified": True})
    # Recorded once, by the active: in its memory (the gate decides from it) and in the database.
    assert identity_pair.active_state.is_verified(ALICE)
    assert (await rows(identity_pair.store))["identity_records"] == 1
    assert not identity_pair.standby_state.is_verified(ALICE)  # the standby wrote nothing itself


async def test_an_assertion_is_usable_once_whichever_process_it_is_sent_to(identity_pair) -> None:
    raw, headers = signed(assertion(assertion_id="a-2"))
    assert (await send_assertion(identity_pair.gate, raw, headers))[0] == 200
    recorded = await rows(identity_pair.store)
    for client in (identity_pair.gate, identity_pair.active):
        # The very request sent again, to either: its first answer, nothing recorded again.
        assert await send_assertion(client, raw, headers) == (200, {"user_id": ALICE, "verified": True})
        # The same assertion_id under another signature (a later timestamp): a replay.
        status, body = await send_assertion(client, *signed(assertion(assertion_id="a-2", level="L3"),
                                                             timestamp=NOW // 1000 + 1))
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert body["error"] == "assertion already used: each signed assertion is accepted once"
    assert await rows(identity_pair.store) == recorded
    # Sent to the active first, replayed to the standby: refused too.
    raw, headers = signed(assertion(assertion_id="a-3", level="L3"))
    assert (await send_assertion(identity_pair.active, raw, headers))[0] == 200
    replay = signed(assertion(assertion_id="a-3", level="L1"), timestamp=NOW // 1000 - 1)
    status, body = await send_assertion(identity_pair.gate, *replay)
    assert status == 401 and body["error"].startswith("assertion already used")
    # And once the standby has taken over, it records itself and still refuses the replay.
    identity_pair.binding.active(SimpleNamespace(state=identity_pair.standby_state, directory=None,
                                                 prompt=lambda user: None, published=lambda user, room: None),
                                 lambda: {"role": "active"})
    status, body = await send_assertion(identity_pair.gate, *replay)
    assert status == 401 and body["error"].startswith("assertion already used")
    assert (await rows(identity_pair.store))["identity_records"] == 2


async def test_with_the_active_unreachable_the_standby_answers_503_and_records_nothing(identity_pair, caplog) -> None:
    before = await rows(identity_pair.store)
    await identity_pair.standby_store.put(LEADER_KEY, orjson.dumps({"url": UNREACHABLE}).decode())
    await identity_pair.standby.read_leader()
    raw, headers = signed(assertion(assertion_id="a-4"))
    status, body = await send_assertion(identity_pair.gate, raw, headers)
    assert (status, body["errcode"]) == (503, "M_UNKNOWN")
    # Nothing reached an active bot (no connection), so this much is known.
    assert body["error"] == ("this bot process is starting or standing by and cannot reach the active bot now;"
                             " nothing was recorded, send the assertion again")
    assert f"no active bot to relay it to ({UNREACHABLE})" in caplog.text  # the address: in the log only
    assert await rows(identity_pair.store) == before
    # Not lost: sent again once the active answers, it is recorded (it was never spent).
    await identity_pair.standby_store.put(LEADER_KEY, orjson.dumps({"url": url_of(identity_pair.active)}).decode())
    await identity_pair.standby.read_leader()
    assert await send_assertion(identity_pair.gate, raw, headers) == (200, {"user_id": ALICE, "verified": True})
    assert identity_pair.active_state.is_verified(ALICE)


async def test_an_active_too_slow_for_the_relay_records_it_and_the_resend_is_answered_200(
        identity_pair, monkeypatch) -> None:
    # review 11b, break 2: the standby stops waiting, the active (served as in production) goes on
    # and records. The 503 must not say nothing was recorded, and the resend it asks for is a 200.
    monkeypatch.setattr(assertion_module, "RELAY_TIMEOUT_S", 0.3)
    known_user = Identity.known_user

    async def slow_admin_api(self, user_id):
        await asyncio.sleep(0.6)
        return await known_user(self, user_id)

    monkeypatch.setattr(Identity, "known_user", slow_admin_api)
    raw, headers = signed(assertion(assertion_id="slow-1"))
    status, body = await send_assertion(identity_pair.gate, raw, headers)
    assert (status, body["errcode"]) == (503, "M_UNKNOWN")
    assert body["error"] == ("the active bot did not answer in time; it may or may not have recorded the verification:"
                             " send the assertion again (if it was recorded, the same request is answered as the"
                             " first time)")
    assert "nothing was recorded" not in body["error"]
    await until(lambda: identity_pair.active_state.is_verified(ALICE))  # the active finished its work
    recorded = await rows(identity_pair.store)
    assert recorded["identity_records"] == 1
    monkeypatch.setattr(Identity, "known_user", known_user)
    assert await send_assertion(identity_pair.gate, raw, headers) == (200, {"user_id": ALICE, "verified": True})
    assert await rows(identity_pair.store) == recorded


async def test_the_standby_checks_the_signature_before_relaying_and_never_names_the_active(
        identity_pair, caplog) -> None:
    # review 11b, break 7: an unsigned request got a 503 naming the active's internal address.
    internal = "http://bot-a.corp.invalid:8009"
    await identity_pair.standby_store.put(LEADER_KEY, orjson.dumps({"url": internal}).decode())
    await identity_pair.standby.read_leader()
    status, body = await send_assertion(identity_pair.gate, b"garbage", {"Content-Type": "text/plain"})
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    assert body["error"].startswith("missing or malformed signature")
    raw, headers = signed(assertion(assertion_id="a-7"), secret=b"t" * 48)
    status, body = await send_assertion(identity_pair.gate, raw, headers)
    assert status == 401 and body["error"].startswith("bad signature")
    assert internal not in caplog.text  # never sent on: the active was not even tried
    # A signed one is relayed; the active cannot be reached, and its address stays in the log.
    status, body = await send_assertion(identity_pair.gate, *signed(assertion(assertion_id="a-7")))
    assert status == 503 and internal not in body["error"] and "corp.invalid" not in body["error"]
    assert internal in caplog.text


@pytest.mark.postgres_only
async def test_an_assertion_relayed_to_a_fenced_old_active_gets_503_with_an_errcode(
        identity_pair, backend) -> None:
    # review 11b, break 8: the old active's store refuses its writes once another process took over
    # (bot.store.pg NotActive); it answered a bare 500 text/plain.
    identity_pair.store.db.conn.epoch = 1
    await identity_pair.standby_store.put("ha.epoch", "2")  # a takeover claimed epoch 2
    raw, headers = signed(assertion(assertion_id="fenced-1"))
    answer = await identity_pair.gate.post(PATH, data=raw, headers=headers)
    assert (answer.status, answer.content_type) == (503, "application/json")
    assert await answer.json() == {
        "errcode": "M_UNKNOWN", "error": "this bot process is no longer the active one (another took over);"
                                         " nothing was recorded, send the assertion again"}
    assert (await rows(identity_pair.standby_store))["identity_records"] == 0


async def test_a_relayed_assertion_reaching_a_standby_is_not_sent_round_again(identity_pair) -> None:
    before = await rows(identity_pair.store)
    raw, headers = signed(assertion(assertion_id="a-5"))
    status, body = await send_assertion(identity_pair.gate, raw, {**headers, RELAYED_HEADER: "1"})
    assert (status, body["errcode"]) == (503, "M_UNKNOWN")
    assert "no active bot to record the verification now" in body["error"]
    assert await rows(identity_pair.store) == before and not identity_pair.active_state.is_verified(ALICE)


async def test_the_actives_refusal_is_passed_on_unchanged(identity_pair) -> None:
    raw, headers = signed(assertion(user_id="@nobody:elsewhere.test", assertion_id="a-6"))
    direct = await send_assertion(identity_pair.active, raw, headers)
    assert (direct[0], direct[1]["errcode"]) == (404, "M_NOT_FOUND")
    assert await send_assertion(identity_pair.gate, raw, headers) == direct
    assert (await rows(identity_pair.store))["identity_records"] == 0


# --- gap 3: the fence's cost per write (bench/store.py) ---------------------------------------------


async def test_the_fence_bench_times_both_kinds_of_write_fenced_and_not(pg_cluster, tmp_path, monkeypatch) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    monkeypatch.setattr(sys, "path", list(sys.path))  # the bench puts bench/ first on it
    path = Path(__file__).resolve().parents[2] / "bench" / "store.py"
    spec = importlib.util.spec_from_file_location("store_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    times = await bench.fence_figures(await pg_cluster.fresh(), tmp_path / "head", writes=20, warmup=2)
    assert {kind: {name: len(values) for name, values in by.items()} for kind, by in times.items()} == {
        "kv write": {"unfenced": 20, "fenced": 20}, "audit record": {"unfenced": 20, "fenced": 20}}
    assert all(value > 0 for by in times.values() for values in by.values() for value in values)


async def test_the_high_availability_runner_binds_its_standby_gate_to_ask_and_relay(tmp_path) -> None:
    # What bot.ha does on PostgreSQL: a standby's gate asks the active about consent and relays
    # identity assertions to it, with one consent cache for the process's life.
    from bot.config import Settings
    from bot.ha import HighAvailability

    store = await Store.open(tmp_path / "bot.db")
    settings = Settings(homeserver={"url": "http://hs.test", "user_id": "@bot:hs.test", "password": "p"},
                        gate={"token": TOKEN}, database={"url": "postgresql://bot@db.invalid/bot"})
    state = new_state()
    gate = Gate(state, Translator("en"), TOKEN, lambda user: None)
    gate.identity_endpoint = identity_endpoint(SimpleNamespace(), settings, lambda: NOW)
    ha = HighAvailability(settings, SimpleNamespace(gate=gate, store=store), asyncio.Event())
    try:
        ha._bind_standby(state)
        assert isinstance(ha.consent, ConsentViaActive) and gate.consent == ha.consent.answer
        assert gate.identity_endpoint.__self__.relay_to is ha.standby
        ha._bind_standby(new_state())  # a new snapshot: the same cache
        assert gate.consent == ha.consent.answer
    finally:
        await store.close()


# --- review 11b, break 1: a starting process asks the active from its first answer ----------------------


@pytest.fixture
async def fake_active():
    """An active bot's gate as far as a starting process meets it: what reaches it is kept."""
    reached: list[str] = []

    async def verifications(request: web.Request) -> web.Response:
        reached.append("assertion " + request.headers.get(RELAYED_HEADER, ""))
        return web.json_response({"user_id": ALICE, "verified": True})

    async def consent(request: web.Request) -> web.Response:
        reached.append("consent " + (await request.json())["user_id"])
        return web.json_response({"accepted": True, "version": "1"})

    app = web.Application()
    app.router.add_post(PATH, verifications)
    app.router.add_post("/replica/v1/consent", consent)
    client = await serve(app)
    client.reached = reached
    yield client
    await client.close()


async def starting_process(database, tmp_path, leader_url: str):
    """What bot.gatefirst.run opens on PostgreSQL, with ``leader_url`` advertised as the active."""
    from bot.config import Settings
    from bot.devserver import free_port
    from bot.gatefirst import GateFirst

    store = await database.open()
    await store.put(LEADER_KEY, orjson.dumps({"url": leader_url, "epoch": 1}).decode())
    await store.close()
    secret_file = tmp_path / "assertion.secret"
    secret_file.write_bytes(SECRET)
    os.chmod(secret_file, 0o600)
    conf = database.settings
    conf["identity"]["assertion_secret_file"] = str(secret_file)
    settings = Settings(homeserver={"url": "http://127.0.0.1:9", "user_id": "@bot:hs.test", "password": "x" * 16},
                        gate={"listen": f"127.0.0.1:{free_port()}", "token": TOKEN}, language="en", **conf)
    early = await GateFirst.open(settings, Translator("en"), lambda: NOW, until_role_known=True)
    return settings, early


@pytest.mark.postgres_only
async def test_a_starting_process_relays_assertions_and_asks_consent_before_it_knows_its_role(
        database, backend, tmp_path, fake_active) -> None:
    settings, early = await starting_process(database, tmp_path, url_of(fake_active))
    try:
        async with TestClient(ProductionServer(web.Application())) as client:
            url = f"http://{settings.gate.listen}"
            raw, headers = signed(assertion(assertion_id="s-1"))
            async with client.session.post(url + PATH, data=raw, headers=headers) as answer:
                assert (answer.status, await answer.json()) == (200, {"user_id": ALICE, "verified": True})
            async with client.session.post(url + "/antispam/check_event_for_spam", json=post(ALICE, "$1"),
                                           headers=AUTH) as answer:
                assert answer.status == 200  # she agreed at registration: the active said so
        assert fake_active.reached == ["assertion 1", f"consent {ALICE}"]
        assert (await rows(early.store))["identity_records"] == 0  # nothing recorded behind the active's back
        # bot.ha goes on with the same follower and the same consent answers.
        from bot.ha import HighAvailability

        ha = HighAvailability(settings, early, asyncio.Event())
        assert ha.standby is early.standby and ha.consent is early.consent_via_active
    finally:
        await early.close()


@pytest.mark.postgres_only
async def test_a_starting_process_with_no_other_active_answers_503_and_records_nothing(
        database, backend, tmp_path) -> None:
    own = "http://127.0.0.1:1"  # the kv still names this process: it was the active before its restart
    settings, early = await starting_process(database, tmp_path, own)
    try:
        early.standby._own_url = own
        async with TestClient(ProductionServer(web.Application())) as client:
            raw, headers = signed(assertion(assertion_id="s-2"))
            async with client.session.post(f"http://{settings.gate.listen}{PATH}", data=raw, headers=headers) as answer:
                assert (answer.status, await answer.json()) == (503, {
                    "errcode": "M_UNKNOWN", "error": "this bot process is starting or standing by and cannot reach"
                                                     " the active bot now; nothing was recorded, send the assertion"
                                                     " again"})
        assert (await rows(early.store))["identity_records"] == 0
    finally:
        await early.close()


async def test_the_start_up_asks_the_active_until_bot_ha_knows_the_role_only_on_postgresql(monkeypatch) -> None:
    import bot.gatefirst as gatefirst
    from bot.config import Settings

    opened: list[bool] = []

    async def open_and_fail(settings, translate, clock, *, until_role_known=False):
        opened.append(until_role_known)
        raise RuntimeError("stop here")

    monkeypatch.setattr(gatefirst.GateFirst, "open", open_and_fail)
    for database, expected in (({"url": "postgresql://bot@db.invalid/bot"}, True), ({"path": "/tmp/x.db"}, False)):
        settings = Settings(homeserver={"url": "http://hs.test", "user_id": "@bot:hs.test", "password": "p" * 16},
                            gate={"token": TOKEN}, database=database, records={"audit_head_file": "/tmp/head"})
        with pytest.raises(RuntimeError, match="stop here"):
            await gatefirst.run(settings)
        assert opened.pop() is expected
