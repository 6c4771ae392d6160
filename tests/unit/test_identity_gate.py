"""POST /identity/v1/verifications on the gate: a signed assertion verifies an account; every bad
request gets its status, errcode and error text, and leaves the database exactly as it was."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.gate.server import Gate
from bot.i18n import Translator
from bot.identity.assertion import identity_endpoint
from bot.identity.service import Identity
from bot.matrix.client import MatrixError
from tests.unit.test_identity import ALICE, SUBJECT, new_state, settings_for

PATH = "/identity/v1/verifications"
SECRET = b"s" * 48
NOW_S = 1_800_000_000
NOW = NOW_S * 1000
TABLES = ("identity_records", "identity_assertions", "identity_blacklist", "audit_log", "effects")


class FakeAdmin:
    """The admin API's user record: present for the accounts it holds, 404 (None) otherwise."""

    def __init__(self, users: dict[str, dict]) -> None:
        self.users = users
        self.down = False

    async def user_record(self, user_id: str):
        if self.down:
            raise MatrixError("admin API GET", errcode="ClientConnectorError")
        return self.users.get(user_id)


@pytest.fixture
async def gate(store, tmp_path):
    secret_file = tmp_path / "assertion.secret"
    secret_file.write_bytes(SECRET)
    os.chmod(secret_file, 0o600)
    settings = settings_for(tmp_path, assertion_secret_file=str(secret_file), keep_attributes=["name"],
                            accounts_per_subject=1)
    state = new_state()
    state.record_acceptance(ALICE, "1")  # seen by the bot
    clock = {"now": NOW}
    identity = await Identity.open(settings, store, state, lambda: clock["now"])
    server = Gate(state, Translator("en"), "gate-token-" + "x" * 16, lambda user: None)
    server.identity_endpoint = identity_endpoint(identity, settings, lambda: clock["now"])
    async with TestClient(TestServer(server.app())) as client:
        client.identity, client.store, client.clock = identity, store, clock
        yield client


def assertion(**changes) -> dict:
    body = {"user_id": ALICE, "subject": SUBJECT, "method": "eid", "level": "L2", "verified_at": NOW - 60_000}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def signed(body: bytes | dict, timestamp: int = NOW_S, secret: bytes = SECRET) -> tuple[bytes, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signature = hmac.new(secret, str(timestamp).encode() + b"." + raw, hashlib.sha256).hexdigest()
    return raw, {"X-Timestamp": str(timestamp), "X-Signature": f"sha256={signature}",
                 "Content-Type": "application/json"}


async def snapshot(store) -> dict[str, int]:
    return {t: (await store.db.fetchone(f"SELECT COUNT(*) FROM {t}"))[0] for t in TABLES}


async def post(gate, raw: bytes, headers: dict):
    resp = await gate.post(PATH, data=raw, headers=headers)
    return resp.status, await resp.json()


async def test_a_signed_assertion_verifies_the_account(gate):
    raw, headers = signed(assertion(attributes={"name": "张三", "nation": "汉"}))
    status, body = await post(gate, raw, headers)
    assert (status, body) == (200, {"user_id": ALICE, "verified": True})
    assert gate.identity.is_verified(ALICE)
    current = await gate.identity.current(ALICE)
    assert (current.verifier, current.method, current.level, current.verified_at) == (
        "assertion", "eid", "L2", NOW - 60_000)
    row = await gate.store.db.fetchone("SELECT attributes FROM identity_records")
    assert gate.identity._keys.decrypt(ALICE, row[0]) == {"name": "张三"}  # "nation" is not kept


def unsigned_cases():
    raw, good = signed(assertion())
    bad_sig = dict(good, **{"X-Signature": "sha256=" + "0" * 64})
    other_secret = signed(assertion(), secret=b"t" * 48)[1]
    return [
        ("no signature", raw, {k: v for k, v in good.items() if k != "X-Signature"}, "missing or malformed signature"),
        ("no timestamp", raw, {k: v for k, v in good.items() if k != "X-Timestamp"}, "missing or malformed signature"),
        ("not sha256=", raw, dict(good, **{"X-Signature": "md5=abc"}), "missing or malformed signature"),
        ("wrong signature", raw, bad_sig, "bad signature"),
        ("another secret", raw, other_secret, "bad signature"),
        ("body changed", raw.replace(b"L2", b"L3"), good, "bad signature"),
        ("timestamp changed", raw, dict(good, **{"X-Timestamp": str(NOW_S + 1)}), "bad signature"),
    ]


@pytest.mark.parametrize("name, raw, headers, error", unsigned_cases(), ids=[c[0] for c in unsigned_cases()])
async def test_a_bad_or_missing_signature_is_401_and_records_nothing(gate, name, raw, headers, error):
    before = await snapshot(gate.store)
    status, body = await post(gate, raw, headers)
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED" and error in body["error"]
    assert await snapshot(gate.store) == before and not gate.identity.is_verified(ALICE)


@pytest.mark.parametrize("skew_s", [-301, 301], ids=["too old", "from the future"])
async def test_an_expired_assertion_is_401_either_way(gate, skew_s):
    before = await snapshot(gate.store)
    status, body = await post(gate, *signed(assertion(), timestamp=NOW_S + skew_s))
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    assert body["error"].startswith("assertion expired")
    assert await snapshot(gate.store) == before
    # Just inside the window either way is fine.
    assert (await post(gate, *signed(assertion(), timestamp=NOW_S + skew_s - (1 if skew_s > 0 else -1))))[0] == 200


async def test_the_same_request_sent_again_gets_its_first_answer_and_records_nothing(gate):
    # review 11b, break 2: an identity service that got no answer (a timeout, a 503 that cannot
    # know whether the bot recorded it) sends the very request again; a 401 would tell it the
    # verification failed although it is recorded.
    raw, headers = signed(assertion())
    first = await post(gate, raw, headers)
    assert first == (200, {"user_id": ALICE, "verified": True})
    before = await snapshot(gate.store)
    for _ in range(2):
        assert await post(gate, raw, headers) == first
    assert await snapshot(gate.store) == before  # no second record, no audit row


async def test_a_replayed_assertion_is_401_with_its_own_error(gate):
    # By assertion_id: the same id under a new signature (another timestamp) is a replay.
    assert (await post(gate, *signed(assertion(assertion_id="a-1"), timestamp=NOW_S - 10)))[0] == 200
    before = await snapshot(gate.store)
    status, body = await post(gate, *signed(assertion(assertion_id="a-1", level="L3"), timestamp=NOW_S - 5))
    assert (status, body["errcode"], body["error"]) == (
        401, "M_UNAUTHORIZED", "assertion already used: each signed assertion is accepted once")
    assert await snapshot(gate.store) == before


async def test_the_same_request_sent_after_a_revocation_is_401_not_verified(gate):
    raw, headers = signed(assertion(assertion_id="a-2"))
    assert (await post(gate, raw, headers))[0] == 200
    await gate.identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="fraud")
    before = await snapshot(gate.store)
    status, body = await post(gate, raw, headers)
    assert (status, body["errcode"], body["error"]) == (
        401, "M_UNAUTHORIZED",
        "assertion already used: each signed assertion is accepted once (the verification it made was revoked or replaced since)")
    assert await snapshot(gate.store) == before and not gate.identity.is_verified(ALICE)


async def test_used_assertions_are_pruned_only_well_outside_the_window(gate):
    # Kept SPENT_KEPT_EXTRA_MS past their expiry: another process's clock may be that far behind
    # (review 11b, break 3; tests/unit/test_identity_review9.py has the two clocks).
    assert (await post(gate, *signed(assertion(assertion_id="old"))))[0] == 200
    gate.clock["now"] = NOW + 15 * 60_000  # 10 min past its expiry: still kept
    assert (await post(gate, *signed(assertion(assertion_id="new"), timestamp=NOW_S + 15 * 60)))[0] == 200
    keys = sorted(r[0] for r in await gate.store.db.fetchall("SELECT assertion_key FROM identity_assertions"))
    assert keys == ["id:new", "id:old"]
    gate.clock["now"] = NOW + 15 * 60_000 + 2
    assert (await post(gate, *signed(assertion(assertion_id="newer"), timestamp=NOW_S + 15 * 60)))[0] == 200
    keys = sorted(r[0] for r in await gate.store.db.fetchall("SELECT assertion_key FROM identity_assertions"))
    assert keys == ["id:new", "id:newer"]


BAD_BODIES = [
    ("not JSON", b"{nope", 400, "M_BAD_JSON", "request body is not JSON"),
    ("a list", b"[]", 400, "M_BAD_JSON", "must be a JSON object"),
    ("no subject", assertion(subject=None), 400, "M_MISSING_PARAM", "missing field(s): subject"),
    ("nothing", {}, 400, "M_MISSING_PARAM", "missing field(s): user_id, subject, method, level, verified_at"),
    ("bad user", assertion(user_id="alice"), 400, "M_INVALID_PARAM", "user_id must be a Matrix user ID"),
    ("subject a number", assertion(subject=12345), 400, "M_INVALID_PARAM", "subject must be a non-empty string"),
    ("bad time", assertion(verified_at="yesterday"), 400, "M_INVALID_PARAM", "verified_at must be ms"),
    ("future", assertion(verified_at=NOW + 3_600_000), 400, "M_INVALID_PARAM", "verified_at is in the future"),
    ("attributes", assertion(attributes=["x"]), 400, "M_INVALID_PARAM", "attributes must be an object"),
    ("remote user", assertion(user_id="@alice:elsewhere.test"), 404, "M_NOT_FOUND", "not an account of this homeserver"),
    ("never seen", assertion(user_id="@ghost:hs.test"), 404, "M_NOT_FOUND", "not an account of this homeserver"),
]


@pytest.mark.parametrize("name, body, status, errcode, error", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_input_is_refused_clearly_and_records_nothing(gate, caplog, name, body, status, errcode, error):
    before = await snapshot(gate.store)
    caplog.set_level(logging.DEBUG)
    got_status, got = await post(gate, *signed(body))
    assert (got_status, got["errcode"]) == (status, errcode) and error in got["error"], got
    assert await snapshot(gate.store) == before
    assert SUBJECT not in json.dumps(got) and SUBJECT not in caplog.text


async def test_the_admin_api_decides_who_exists_when_there_is_a_token(gate):
    gate.identity.admin = FakeAdmin({"@new:hs.test": {"name": "@new:hs.test", "deactivated": False},
                                     "@gone:hs.test": {"name": "@gone:hs.test", "deactivated": True}})
    assert (await post(gate, *signed(assertion(user_id="@new:hs.test"))))[0] == 200  # never seen, but exists
    status, body = await post(gate, *signed(assertion(user_id="@gone:hs.test", subject="x")))
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await post(gate, *signed(assertion(user_id=ALICE, subject="y")))
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")  # the homeserver does not know it
    gate.identity.admin.down = True
    before = await snapshot(gate.store)
    status, body = await post(gate, *signed(assertion(user_id="@new:hs.test", subject="z")))
    assert (status, body["errcode"], body["error"]) == (503, "M_UNKNOWN", "cannot check the account now; try again later")
    assert await snapshot(gate.store) == before


async def test_refused_by_policy_is_403_with_the_reason_and_no_verification(gate):
    assert (await post(gate, *signed(assertion())))[0] == 200
    gate.identity._state.record_acceptance("@bob:hs.test", "1")
    status, body = await post(gate, *signed(assertion(user_id="@bob:hs.test"), timestamp=NOW_S - 1))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN") and "most verified accounts" in body["error"]
    assert not gate.identity.is_verified("@bob:hs.test")
    assert await gate.store.identity.history("@bob:hs.test") == []
    # The refused assertion is spent as well (review 9 #10): a refusal records no verification,
    # only the audit record of the attempt, and cannot be replayed into either.
    assert (await snapshot(gate.store))["identity_assertions"] == 2
    await gate.identity.blacklist(ALICE, case_id=9, actor="@mod:hs.test")
    await gate.identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="closed")
    status, body = await post(gate, *signed(assertion(user_id="@bob:hs.test"), timestamp=NOW_S - 2))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN") and "blacklist" in body["error"]
    assert SUBJECT not in json.dumps(body)


async def test_a_body_over_64_kib_is_413(gate):
    before = await snapshot(gate.store)
    status, body = await post(gate, *signed(assertion(method="x" * 70_000)))
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE") and await snapshot(gate.store) == before


async def test_without_a_secret_file_assertions_are_refused(store, tmp_path):
    settings = settings_for(tmp_path)
    state = new_state()
    identity = await Identity.open(settings, store, state, lambda: NOW)
    server = Gate(state, Translator("en"), "gate-token-" + "x" * 16, lambda user: None)
    server.identity_endpoint = identity_endpoint(identity, settings, lambda: NOW)
    async with TestClient(TestServer(server.app())) as client:
        resp = await client.post(PATH, data=signed(assertion())[0], headers=signed(assertion())[1])
        body = await resp.json()
    assert resp.status == 403 and "identity.assertion_secret_file is not set" in body["error"]


# -- review 11b, break 3: two processes whose clocks differ, one database -------------------------------

MINUTE = 60_000


async def endpoint_on(store, settings, clock):
    """A gate with its own Identity (its own memory, its own clock) on ``store``."""
    state = new_state()
    state.record_acceptance(ALICE, "1")
    identity = await Identity.open(settings, store, state, clock)
    server = Gate(state, Translator("en"), "gate-token-" + "x" * 16, lambda user: None)
    server.identity_endpoint = identity_endpoint(identity, settings, clock)
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    return client, identity


async def test_a_process_whose_clock_runs_fast_does_not_forget_a_spent_assertion_early(store, tmp_path, database):
    secret_file = tmp_path / "assertion.secret"
    secret_file.write_bytes(SECRET)
    os.chmod(secret_file, 0o600)
    settings = settings_for(tmp_path, assertion_secret_file=str(secret_file))
    real = [NOW]
    # The old active's clock runs 4 min fast, the new active's 4 min slow: each still accepts the
    # identity service's fresh assertions.
    old, _ = await endpoint_on(store, settings, lambda: real[0] + 4 * MINUTE)
    other_store = await type(store).open(database.location, tmp_path / "other.audit-head")
    new, new_identity = await endpoint_on(other_store, settings, lambda: real[0] - 4 * MINUTE)
    try:
        spent = signed(assertion(assertion_id="X"), timestamp=NOW_S)
        assert (await post(old, *spent))[0] == 200
        real[0] = NOW + 1 * MINUTE
        assert await new_identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="fraud")
        # t = 5.5 min: another assertion through the old active (its clock says 9.5 min, X's row
        # expired 4.5 min ago by it) prunes what it takes as expired.
        real[0] = NOW + 5 * MINUTE + 30_000
        assert (await post(old, *signed(assertion(assertion_id="Y", level="L1"), timestamp=NOW_S + 330)))[0] == 200
        assert await new_identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="fraud again")
        before = await snapshot(store)
        # t = 8.9 min: the new active (its clock says 4.9 min) still takes X's timestamp; X replayed.
        real[0] = NOW + 8 * MINUTE + 54_000
        status, body = await post(new, *spent)
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED") and body["error"].startswith("assertion already used")
        assert await snapshot(store) == before and not new_identity.is_verified(ALICE)
    finally:
        await new.close()
        await old.close()
        await other_store.close()


async def test_the_same_request_sent_while_the_first_is_being_recorded_is_never_refused(gate):
    """Review 11c, break 1: a resend that arrives while the first request is still in its
    transaction (a relay that timed out) read the first's row half-way (SQLite: through the one
    connection, uncommitted) and answered 401 "revoked since" for an account verified a moment
    later. Now it waits for the first to commit and gets its answer."""
    recording, go_on = asyncio.Event(), asyncio.Event()
    record = gate.store.identity.record_verification

    async def slow_record(**fields):
        row = await record(**fields)
        recording.set()
        await go_on.wait()  # still inside the first request's transaction
        return row

    gate.store.identity.record_verification = slow_record
    raw, headers = signed(assertion(assertion_id="in-flight"))
    first = asyncio.ensure_future(post(gate, raw, headers))
    await asyncio.wait_for(recording.wait(), 5)
    resent = asyncio.ensure_future(post(gate, raw, headers))
    await asyncio.sleep(0.2)
    go_on.set()
    assert [(await first)[0], (await resent)] == [200, (200, {"user_id": ALICE, "verified": True})]
    assert gate.identity.is_verified(ALICE)


async def test_a_resend_after_the_account_was_verified_again_otherwise_is_401(gate):
    """Review 11c, break 4: revoked, then verified by another assertion: the first assertion's
    resend must not answer 200, which would say its verification is the one in force."""
    raw, headers = signed(assertion(assertion_id="first"))
    assert (await post(gate, raw, headers))[0] == 200
    await gate.identity.unverify(user_id=ALICE, actor="@mod:hs.test", reason="fraud")
    other = assertion(assertion_id="second", subject="E12345678", level="L1")
    assert (await post(gate, *signed(other)))[0] == 200
    status, body = await post(gate, raw, headers)
    assert (status, body["error"]) == (401, "assertion already used: each signed assertion is accepted once"
                                            " (the verification it made was revoked or replaced since)")
