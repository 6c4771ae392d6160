"""Real names in chat, end to end (issue 9): a real Synapse with the gate, the bot and real clients.

A moderator verifies a user by hand and !status shows it; an unverified applicant is refused with
how to verify; a sign-in through a configured SSO provider verifies by `!verify`; `!close
--blacklist` blacklists the identity an assertion verified, so a second account verified with it is
refused and the management room is told; Chinese category names work from !申请 to !whois."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.integration.harness import Moderation, User, assert_not_stored, new_user

pytestmark = pytest.mark.integration

SUBJECT = "CN-110101199001011234"  # what the operator's identity service checked: never in chat or the DB

_SECRET_DIR = Path(tempfile.mkdtemp(prefix="identity-chat-"))
SECRET_FILE = _SECRET_DIR / "assertion.secret"
SECRET_FILE.write_bytes(os.urandom(24).hex().encode())  # 48 bytes
SECRET_FILE.chmod(0o600)
MOD_CONFIG = {"identity": {"sso_providers": ["corp"], "assertion_secret_file": str(SECRET_FILE),
                           "required_for": ["public_account", "news"]}}


async def assert_verified(gated, user_id: str, subject: str = SUBJECT) -> tuple[int, dict]:
    """The operator's identity service posts a signed assertion to the bot's gate."""
    body = json.dumps({"user_id": user_id, "subject": subject, "method": "eid", "level": "high",
                       "verified_at": int(time.time() * 1000), "assertion_id": uuid.uuid4().hex}).encode()
    timestamp = str(int(time.time()))
    signature = hmac.new(SECRET_FILE.read_bytes().strip(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"X-Timestamp": timestamp, "X-Signature": f"sha256={signature}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{gated.gate_port}/identity/v1/verifications", data=body,
                                headers=headers) as resp:
            return resp.status, await resp.json()


async def ask(user, bot_id: str, text: str, expect: str) -> str:
    before = len(user.messages(user.dm, bot_id))
    await user.say(user.dm, text)
    return (await user.wait_for_message(user.dm, bot_id, expect, after=before))["content"]["body"]


async def test_manual_verification_status_and_the_application_it_opens(gated, mod):
    alice, bob = await mod.member("alice", gated.hs), await mod.member("bob", gated.hs)
    refused = await ask(alice, mod.bot_id, "!apply public enterprise ACME", "was not accepted")
    assert refused.startswith("Your public-account application was not accepted: this needs a verified real "
                              "identity, and this account is not verified. How to verify"), refused
    assert "log in with corp" in refused
    answer = await ask(alice, mod.bot_id, "!verify", "not verified yet")
    assert "ask a moderator in your direct chat with" in answer

    # Not a moderator: refused, and nothing changes.
    await ask(bob, mod.bot_id, f"!verify {alice.user_id} id-card trust me", "is for moderators only")
    await mod.command(f"!verify {alice.user_id} id-card passport seen at the front desk --dry-run",
                      "Dry run of !verify")
    await ask(alice, mod.bot_id, "!status", "Real identity: not verified")
    await mod.command(f"!verify {alice.user_id} id-card passport seen at the front desk",
                      f"{alice.user_id} is now verified: manual check, method id-card, level manual")
    await mod.command(f"!verify {alice.user_id} id-card again", f"{alice.user_id} is already verified")
    status = await ask(alice, mod.bot_id, "!状态", "Real identity")
    assert re.search(r"Real identity: verified \(manual check, level manual, since \d{4}-\d\d-\d\d \d\d:\d\d UTC\)",
                     status), status

    # Chinese category name and command: the same key is filed; English readers see it in English.
    applied = await ask(alice, mod.bot_id, "!申请 公众账号 企业 ACME 公司", "Application #")
    number = int(re.search(r"#(\d+)", applied).group(1))
    await mod.command(f"!approve {number}", f"Application #{number} approved")
    whois = await ask(bob, mod.bot_id, f"!whois {alice.user_id}", "public account")
    assert "category enterprise" in whois and whois.endswith("Real identity: verified."), whois
    unknown = await ask(bob, mod.bot_id, "!申请 公众账号 占星 Stars", "Unknown category")
    assert unknown == ("Unknown category 占星. Choose one of: news-organisation, news-website, government, enterprise, "
                       "institution, self-media, individual.")

    await mod.command(f"!unverify {alice.user_id} passport reported stolen", "is no longer verified")
    whois = await ask(bob, mod.bot_id, f"!whois {alice.user_id}", "public account")
    assert whois.endswith("Real identity: not verified.")
    history = await mod.command(f"!history {alice.user_id}", "record(s) for")
    body = history["content"]["body"]
    assert "real identity verified: manual check, method id-card, level manual" in body
    assert "real-identity verification revoked by" in body and "passport reported stolen" in body


async def test_single_sign_on_verifies_when_asked(gated, mod):
    erin = await mod.member("erin", gated.hs)
    await ask(erin, mod.bot_id, "!verify", "not verified yet")
    admin = User(gated.hs, gated.bot)
    status, body = await admin.api("PUT", f"/_synapse/admin/v2/users/{erin.user_id}",
                                   {"external_ids": [{"auth_provider": "corp", "external_id": f"E-{uuid.uuid4().hex}"}]})
    await admin.close()
    assert status == 200, body
    answer = await ask(erin, mod.bot_id, "!实名认证", "verifies you")
    assert answer.startswith("Your sign-in with corp verifies you: recorded now (level sso).")
    await ask(erin, mod.bot_id, "!status", "Real identity: verified (single sign-on, level sso")


async def test_close_with_blacklist_refuses_the_same_identity_on_another_account(gated, mod):
    carol, dave = await mod.member("carol", gated.hs), await mod.member("dave", gated.hs)
    status, body = await assert_verified(gated, carol.user_id)
    assert (status, body) == (200, {"user_id": carol.user_id, "verified": True})
    await ask(carol, mod.bot_id, "!status", "Real identity: verified (identity service, level high")

    asked = await mod.command(f"!close {carol.user_id} fraud --blacklist", "!confirm")
    assert "Once confirmed, the identity" in asked["content"]["body"]
    code = re.search(r"!confirm (\w+)", asked["content"]["body"]).group(1)
    await mod.command(f"!confirm {code}", "is now on the identity blacklist")

    status, body = await assert_verified(gated, dave.user_id, subject=f"  {SUBJECT.lower()} ")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN" and "blacklist" in body["error"], body
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"Identity blacklist: {dave.user_id} was just verified")
    await ask(dave, mod.bot_id, "!status", "Real identity: not verified")

    # The subject is nowhere the bot writes: not in the database (its files and WAL, or its rows), not in its log.
    await assert_not_stored(mod.bot, [SUBJECT], control=dave.user_id)
    assert SUBJECT not in mod.bot.log() and SUBJECT.lower() not in mod.bot.log()


async def test_closing_an_account_without_an_identity_to_blacklist_says_so_and_still_closes(gated, mod):
    frank = await mod.member("frank", gated.hs)
    await mod.command(f"!verify {frank.user_id} video-call seen on camera", "is now verified")
    asked = await mod.command(f"!close {frank.user_id} spam --blacklist", "!confirm")
    assert "the closure will blacklist nobody" in asked["content"]["body"]
    code = re.search(r"!confirm (\w+)", asked["content"]["body"]).group(1)
    done = await mod.command(f"!confirm {code}", "nothing was blacklisted")
    assert done["content"]["body"].startswith("Case #")
    assert done["content"]["body"].endswith("nothing was blacklisted; the account is closed all the same.")


async def test_a_chinese_bot_files_and_shows_categories_by_their_chinese_names(gated, make_bot):
    # The harness's setup() waits for English answers; a zh-CN bot is set up here the same way.
    moderator = await new_user(gated.hs, "mod")
    alias = f"mods-zh-{moderator.user_id[5:13]}"
    bot = make_bot(gated.hs, gated.bot, gate=gated, admin_token=True, moderators=[moderator.user_id],
                   management_room=f"#{alias}:{gated.hs.server_name}", language="zh-CN",
                   identity={"required_for": []})
    bot.start()
    status, room = await moderator.create_room(name="管理", room_alias_name=alias, invite=[gated.bot.user_id])
    assert status == 200, room
    mod = Moderation(bot, gated.bot.user_id, moderator, room["room_id"], [moderator])
    await mod.command("!案件列表", "没有案件")
    gina = await new_user(gated.hs, "gina")
    mod.users.append(gina)
    await gina.login()
    gina.dm = await gina.wait_for_invite(mod.bot_id)
    await gina.join(gina.dm)
    await ask(gina, mod.bot_id, "!同意", "谢谢")

    applied = await ask(gina, mod.bot_id, "!申请 公众账号 企业 某某科技", "已收到申请")
    number = int(re.search(r"#(\d+)", applied).group(1))
    announced = await moderator.wait_for_message(mod.room, mod.bot_id, f"申请 #{number}（")
    assert "公众账号，类别 企业，名称 某某科技" in announced["content"]["body"]
    pending = await mod.command("!申请列表", "等待审核的申请")
    assert f"#{number} 公众账号，类别 企业，名称 某某科技：等待审核" in pending["content"]["body"]
    await mod.command(f"!通过 {number}", "已通过")
    whois = await ask(gina, mod.bot_id, f"!查询 {gina.user_id}", "公众账号")
    assert "类别 企业" in whois and "enterprise" not in whois, whois
    refused = await ask(gina, mod.bot_id, "!申请 公众账号 占星 星星", "未知类别")
    assert refused == "未知类别 占星。请从以下类别中选择：新闻单位, 新闻网站, 政府机关, 企业, 事业单位, 自媒体, 个人。"
    # The register keeps the canonical key.
    assert await bot.rows("SELECT category FROM filings") == [("enterprise",)]
    for user in mod.users:
        await user.close()
