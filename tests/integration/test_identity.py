"""Real-name verification's back end against a real Synapse, the running bot and real clients
(issue 9): a signed assertion posted to the bot's gate verifies an account; with
``identity.required_for: [post]`` an unverified account's message is refused with how to verify,
and a verified one's goes through; an account whose Synapse record carries an external ID of a
configured SSO provider is verified at its first login, and loses it when the ID goes; the raw
subject is in neither the database (WAL included), the log, nor any export."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from bot.export import KINDS
from tests.integration.harness import REPO, User, assert_not_stored, new_user, refused, sent, until

pytestmark = pytest.mark.integration

SUBJECT = "ID-440301199212121234"  # what the operator's identity service checked
SSO_SUBJECT = f"sso-{uuid.uuid4().hex}"  # an external ID at the configured provider
NAME = "李雷雷"  # an attribute the operator keeps, encrypted

_SECRET_DIR = Path(tempfile.mkdtemp(prefix="identity-backend-"))
SECRET_FILE = _SECRET_DIR / "assertion.secret"
SECRET_FILE.write_bytes(os.urandom(32).hex().encode())
SECRET_FILE.chmod(0o600)
MOD_CONFIG = {"identity": {"sso_providers": ["corp"], "assertion_secret_file": str(SECRET_FILE),
                           "required_for": ["post"], "keep_attributes": ["name"]}}


async def post_assertion(gated, body: dict, secret: bytes | None = None, timestamp: int | None = None) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    key = SECRET_FILE.read_bytes().strip() if secret is None else secret
    signature = hmac.new(key, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    headers = {"X-Timestamp": timestamp, "X-Signature": f"sha256={signature}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{gated.gate_port}/identity/v1/verifications", data=raw,
                                headers=headers) as resp:
            return resp.status, await resp.json()


def assertion(user_id: str, **extra) -> dict:
    return {"user_id": user_id, "subject": SUBJECT, "method": "eid", "level": "high",
            "verified_at": int(time.time() * 1000), "assertion_id": uuid.uuid4().hex, **extra}


async def test_an_assertion_verifies_and_required_for_post_gates_messages(gated, mod):
    alice, bob = await mod.member("alice", gated.hs), await mod.member("bob", gated.hs)
    status, room = await mod.moderator.create_room(preset="public_chat", name="Square",
                                                   invite=[alice.user_id, bob.user_id])
    assert status == 200, room
    room_id = room["room_id"]
    await alice.join(room_id)
    await bob.join(room_id)

    refused(await alice.say(room_id, "hello"), "this needs a verified real identity", "How to verify",
            "identity service", "log in with corp")
    # A bad signature and an unknown account change nothing.
    status, body = await post_assertion(gated, assertion(alice.user_id), secret=b"x" * 64)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED") and "bad signature" in body["error"]
    status, body = await post_assertion(gated, assertion(f"@nobody-{uuid.uuid4().hex[:6]}:{gated.hs.server_name}"))
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    refused(await alice.say(room_id, "still me"), "verified real identity")

    body = assertion(alice.user_id, attributes={"name": NAME, "address": "somewhere"})
    signed_at = int(time.time())
    assert await post_assertion(gated, body, timestamp=signed_at) == (200, {"user_id": alice.user_id, "verified": True})
    # The same request again (a retry after a timeout) gets its first answer; the assertion signed
    # anew is a replay.
    assert await post_assertion(gated, body, timestamp=signed_at) == (200, {"user_id": alice.user_id, "verified": True})
    replay = await post_assertion(gated, body, timestamp=signed_at + 1)
    assert replay[0] == 401 and replay[1]["error"].startswith("assertion already used")
    sent(await alice.say(room_id, "verified now"))
    refused(await bob.say(room_id, "me too?"), "verified real identity")
    # The unverified account still talks to the bot in its direct chat.
    sent(await bob.say(bob.dm, "!status"))

    # The subject and the kept attribute leave no trace in clear; reveal reads the attribute, on record.
    reveal = subprocess.run([sys.executable, "-m", "bot", "identity", "reveal", alice.user_id, "--reason",
                             "integration check", "--config", str(mod.bot.config_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert reveal.returncode == 0, reveal.stderr
    assert f'"name": "{NAME}"' in reveal.stdout and "somewhere" not in reveal.stdout
    await nowhere(mod, SUBJECT, NAME)


async def test_single_sign_on_verifies_at_first_login_and_ends_with_the_external_id(gated, mod):
    carol = await new_user(gated.hs, "carol")
    mod.users.append(carol)
    admin = User(gated.hs, gated.bot)
    path = f"/_synapse/admin/v2/users/{carol.user_id}"
    status, body = await admin.api("PUT", path, {"external_ids": [{"auth_provider": "corp", "external_id": SSO_SUBJECT}]})
    assert status == 200, body
    await carol.login()  # the gate sees the first login: onboarding, and the SSO check
    carol.dm = await carol.wait_for_invite(mod.bot_id)
    await carol.join(carol.dm)
    await carol.wait_for_message(carol.dm, mod.bot_id, "!agree")
    await carol.say(carol.dm, "!agree")
    await carol.wait_for_message(carol.dm, mod.bot_id, "recorded")
    status, room = await mod.moderator.create_room(preset="public_chat", name="SSO square", invite=[carol.user_id])
    assert status == 200, room
    await carol.join(room["room_id"])

    async def posts() -> bool:
        return bool(getattr(await carol.say(room["room_id"], "signed in through corp"), "event_id", None))

    await until(posts, what="carol verified by single sign-on")
    history = await mod.command(f"!history {carol.user_id}", "record(s) for")
    assert "real identity verified: single sign-on, method corp, level sso" in history["content"]["body"]

    # The external ID removed: asked again, the verification is revoked and posting stops.
    status, body = await admin.api("PUT", path, {"external_ids": []})
    await admin.close()
    assert status == 200, body
    await carol.say(carol.dm, "!verify")
    await carol.wait_for_message(carol.dm, mod.bot_id, "no longer linked")
    refused(await carol.say(room["room_id"], "still?"), "verified real identity")
    await nowhere(mod, SSO_SUBJECT)


async def nowhere(mod, *secrets: str) -> None:
    """None of ``secrets`` (nor its canonical, lower-case form) in the database (its files on
    SQLite, its rows on PostgreSQL), the bot's log, or any export the bot makes."""
    await assert_not_stored(mod.bot, secrets, control=mod.users[-1].user_id)
    needles = {s.encode() for s in secrets} | {s.lower().encode() for s in secrets}
    log = mod.bot.log().encode()
    assert not any(n in log for n in needles)
    for kind in KINDS:
        for fmt in ("csv", "jsonl"):
            out = subprocess.run([sys.executable, "-m", "bot", "export", "--kind", kind, "--format", fmt,
                                  "--config", str(mod.bot.config_path)], cwd=REPO, capture_output=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert not any(n in out.stdout for n in needles), (kind, fmt)
