"""From a message to a reply: parse, check the role, run, answer — in one place for every command."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from bot.commands.context import Context, Services
from bot.commands.registry import Registry, UnknownCommand, UsageError
from bot.i18n import Refusal
from bot.matrix.client import Matrix, txn_id
from bot.store.db import store_unavailable

log = logging.getLogger(__name__)

# Longer bodies are not commands anyone typed; parsing them is wasted work.
MAX_COMMAND_LENGTH = 16 * 1024


class Dispatcher:
    def __init__(self, registry: Registry, services: Services, matrix: Matrix | None = None) -> None:
        self._registry = registry
        self._services = services

    async def handle(
        self, room_id: str, event: dict[str, Any], *, answer_unknown: bool, moderator_place: bool = False
    ) -> bool:
        """Handle a message if it is a command; True if it was one.

        ``answer_unknown``: whether an unknown ``!word`` gets a hint. Only in the bot's own rooms
        (DMs, the management room): in shared rooms it may be meant for another bot.
        ``moderator_place``: the management room, or a moderator's direct chat with the bot: the
        only places moderator commands run.

        Exactly once: what the command records, the effects it journals, its reply (an effect too)
        and the mark that the event was handled commit in one transaction. A replayed sync batch
        finds the mark and changes nothing; the reply's transaction ID is derived from the event,
        so a reply sent again after a crash is the same event.
        """
        content = event.get("content") or {}
        body = content.get("body")
        if not isinstance(body, str) or not body.lstrip().startswith(("!", "> ")):
            return False
        t = self._services.t
        answer: str | None
        invocation = None
        try:
            invocation = self._registry.parse(body[:MAX_COMMAND_LENGTH])
        except UnknownCommand as exc:
            if not answer_unknown:
                return False
            answer = t("cmd.unknown", command=exc.name[:64])
        except UsageError as exc:
            answer = t("cmd.usage", usage=exc.command.usage())
        else:
            if invocation is None:
                return False
        async with self._services.store.unit(event["event_id"], kind="command") as unit:
            if unit.replayed:
                log.info("command event %s was handled before; not again", event["event_id"])
                return True
            if invocation is not None:
                answer = await self._run(room_id, event, invocation, moderator_place)
            if answer:
                await self._reply(room_id, event, answer)
        return True

    async def _run(self, room_id: str, event: dict[str, Any], invocation: Any, moderator_place: bool) -> str | None:
        t = self._services.t
        command = invocation.command
        sender = event["sender"]
        content = event.get("content") or {}
        if command.for_moderators(invocation.args):
            if sender not in self._services.state.moderators:
                await self._services.store.record(
                    now_ms=self._services.clock(), actor=sender, action="command.refused", target=sender,
                    details={"command": command.name, "room_id": room_id, "event_id": event["event_id"]},
                )
                key = "cmd.forbidden" if command.moderator_only else "cmd.forbidden_args"
                return t(key, command="!" + command.name)
            if not moderator_place:
                return t("cmd.wrong_place", command="!" + command.name)
        ctx = Context(
            sender, room_id, event["event_id"], invocation.args, invocation.flags, self._services, replied_to(content),
            command.name,
        )
        try:
            # A savepoint: a command refused or failed half-way leaves none of its writes behind.
            async with self._services.store.db.transaction():
                return await command.run(ctx)
        except Refusal as exc:
            return t(exc.key, **exc.params)
        except sqlite3.OperationalError as exc:
            if store_unavailable(exc):
                # Not the command's fault: answered "failed" and marked handled, it would be lost.
                # Out of the unit (so nothing of this event commits), the batch is fetched again.
                raise
            log.exception("command !%s from %s failed", command.name, sender)
            return t("cmd.failed", command="!" + command.name)
        except Exception:
            log.exception("command !%s from %s failed", command.name, sender)
            return t("cmd.failed", command="!" + command.name)

    async def _reply(self, room_id: str, event: dict[str, Any], text: str) -> None:
        """Journal the reply (the executor sends it), in the command's transaction."""
        event_id = event["event_id"]
        await self._services.store.effects.add(
            "notice", room_id,
            {"room": room_id, "text": text, "reply_to": event_id, "txn": txn_id("reply", event_id)},
            f"reply/{event_id}", now_ms=self._services.clock(),
        )


def replied_to(content: dict[str, Any]) -> str | None:
    """The event a message really replies to, or None.

    In a thread a client puts the thread's latest event in ``m.in_reply_to`` with
    ``is_falling_back: true`` only so that clients without threads show some context: the user
    did not pick that message, so it is not a reply and never evidence or a report's target.
    """
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict) or relates.get("is_falling_back"):
        return None
    reply = relates.get("m.in_reply_to")
    event_id = reply.get("event_id") if isinstance(reply, dict) else None
    return event_id if isinstance(event_id, str) else None
