"""The management post of a case or report quotes evidence: the journal keeps only a reference and
the executor renders the text when it posts, so the retention purge leaves no copy behind."""

from bot.policy.sanctions import SanctionKind
from bot.sanctions import Request
from bot.store.retention import purge_evidence
from tests.unit import dbview
from tests.unit.journal import executor
from tests.unit.test_effects import BOB, MGMT, MOD, T0, World

SECRET = "my phone is 555-0199 and I live at 12 Elm St"
DAY = 86_400_000


async def copies(store):
    return await dbview.texts_holding(store.db, "555-0199")


async def warn_with_evidence(world):
    await world.sanctions.impose(Request(
        target=BOB, kind=SanctionKind.WARN, actor=MOD, reason="doxxing",
        evidence={"event_id": "$ev", "sender": BOB, "room_id": "!lobby:hs", "content": {"body": SECRET}}))


async def test_a_pending_case_post_holds_no_evidence_after_the_purge(store):
    world = World(store)
    await warn_with_evidence(world)
    ex = executor(store, world.matrix, admin=world.admin, management_room=None, clock=world.clock)
    ex._management_configured = True  # configured, not joined yet: the post stays pending
    await ex.run_due()
    assert (await store.effects.get("management/case-1")).status == "pending"
    assert await copies(store) == ["cases"]  # the record holds it, the journal does not
    world.now = T0 + 181 * DAY
    await purge_evidence(store.db, cutoff=world.now - 180 * DAY, now=world.now, actor="@bot:hs", days=180)
    assert await copies(store) == []


async def test_the_post_is_rendered_with_the_evidence_when_it_is_sent(store):
    world = World(store)
    await warn_with_evidence(world)
    await world.effects.run_due()
    [post] = [text for _, room, text, _ in world.sent(MGMT)]
    assert "case #1" in post.lower() or "#1" in post
    assert SECRET[:30] in post


async def test_a_report_posted_after_the_purge_says_its_evidence_was_purged(store):
    world = World(store)
    report, _ = await store.reports.add(event_id="$ev", room_id="!lobby:hs", sender=BOB,
                                        snapshot={"content": {"body": SECRET}}, reporter=MOD, reason="doxxing",
                                        now=T0, source="command")
    await world.management.post_record("report", report.id, f"report-{report.id}")
    effect = await store.effects.get(f"management/report-{report.id}")
    assert SECRET not in str(effect.payload)
    await purge_evidence(store.db, cutoff=T0 + 1, now=T0 + 2, actor="@bot:hs", days=180)
    await world.effects.run_due()
    [post] = [text for _, room, text, _ in world.sent(MGMT)]
    assert "555-0199" not in post and "purged" in post
