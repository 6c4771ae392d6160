"""The filing register: one pending application per kind, approval files, revocation ends all."""

import pytest

from bot.config import PublicAccountsConfig
from bot.store import AlreadyPending

T0 = 1_790_000_000_000


async def test_apply_approve_revoke(store):
    application = await store.accounts.apply(applicant="@a:hs", kind="public", category="enterprise", name="ACME",
                                             now=T0)
    with pytest.raises(AlreadyPending):
        await store.accounts.apply(applicant="@a:hs", kind="public", category="enterprise", name="ACME 2", now=T0)
    assert [a.id for a in await store.accounts.pending()] == [application.id]
    filing = await store.accounts.approve(application, by="@mod:hs", note="", now=T0 + 1, filing_number="F-1",
                                          category="enterprise", name="ACME")
    assert (filing.owner, filing.filing_number, filing.reviewer, filing.tier) == ("@a:hs", "F-1", "@mod:hs", None)
    assert await store.accounts.approve(application, by="@mod:hs", note="", now=T0, filing_number="F-2",
                                        category="enterprise", name="ACME") is None  # decided once
    news = await store.accounts.apply(applicant="@a:hs", kind="news", tier="reposter", licence="L-9", now=T0 + 2)
    await store.accounts.approve(news, by="@mod:hs", note="", now=T0 + 3, filing_number="F-2",
                                 category="enterprise", name="ACME")
    assert [f.filing_number for f in await store.accounts.active_filings("@a:hs")] == ["F-1", "F-2"]
    assert await store.accounts.next_sequence() == 3
    revoked = await store.accounts.revoke_all("@a:hs", by="@mod:hs", reason="abuse", now=T0 + 4)
    assert [f.filing_number for f in revoked] == ["F-1", "F-2"]
    assert await store.accounts.active_filings("@a:hs") == []
    assert await store.accounts.revoke_all("@a:hs", by="@mod:hs", reason="again", now=T0) == []


async def test_channels(store):
    assert await store.accounts.add_channel("@a:hs", "!c:hs", T0)
    assert not await store.accounts.add_channel("@a:hs", "!c:hs", T0)
    assert await store.accounts.channels("@a:hs") == {"!c:hs": "@a:hs"}
    assert not await store.accounts.remove_channel("@b:hs", "!c:hs", T0)  # not the owner
    assert await store.accounts.remove_channel("@a:hs", "!c:hs", T0)


def test_filing_number_format_is_validated():
    assert PublicAccountsConfig().filing_number_format.format(year=2026, category="03", seq=7) == "IM2026-03-000007"
    with pytest.raises(ValueError, match="must contain"):
        PublicAccountsConfig(filing_number_format="IM-{year}")
    with pytest.raises(ValueError, match="not a filing number format"):
        PublicAccountsConfig(filing_number_format="IM-{nope}")
