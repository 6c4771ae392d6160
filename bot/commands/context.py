"""What a command handler receives: who asked, where, its arguments, and the narrow services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bot.i18n import Translator

if TYPE_CHECKING:
    from bot.accounts import PublicAccounts
    from bot.agreement import AgreementService
    from bot.commands.registry import Registry
    from bot.identity.service import Identity
    from bot.matrix.client import Matrix
    from bot.matrix.onboarding import Onboarding
    from bot.news import News
    from bot.reports import Reports
    from bot.sanctions import Sanctions
    from bot.policy import PolicyState
    from bot.store import Store


@dataclass(frozen=True)
class Services:
    t: Translator
    state: "PolicyState"
    store: "Store"
    agreements: "AgreementService"
    onboarding: "Onboarding"
    registry: "Registry"
    sanctions: "Sanctions"
    matrix: "Matrix"
    clock: Callable[[], int]
    reports: "Reports"
    accounts: "PublicAccounts"
    news: "News"
    # The news rules file, so a dry run of !reload can read it without loading it.
    rules_path: Path | None = None
    # Real-name verification (issue 9): !verify, !unverify and what !status, !whois, !history and
    # !close --blacklist say about it. None only in tests of commands that never ask.
    identity: "Identity | None" = None


@dataclass(frozen=True)
class Context:
    sender: str
    room_id: str
    event_id: str
    args: dict[str, Any]
    flags: frozenset[str]
    services: Services
    reply_to: str | None = None  # the event this command answers, if it was sent as a reply
    command: str = ""  # the command's English name, whichever alias was typed

    @property
    def t(self) -> Translator:
        return self.services.t


def would(ctx: Context, *steps: str) -> str:
    """A dry run's answer: what the command would record and do, one step a line; nothing done."""
    lines = "\n".join(ctx.t("dry_run.step", step=step) for step in steps)
    return ctx.t("dry_run.would", command="!" + ctx.command, steps=lines)
