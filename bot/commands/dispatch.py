"""From a message to a reply: parse, check the role, run, answer — in one place for every command."""

from __future__ import annotations

import logging
from typing import Any

from bot.commands.context import Context, Services
from bot.commands.registry import Registry, UnknownCommand, UsageError
from bot.i18n import Refusal
from bot.matrix.client import Matrix, txn_id

log = logging.getLogger(__name__)

# Longer bodies are not commands anyone typed; parsing them is wasted work.
MAX_COMMAND_LENGTH = 16 * 1024


class Dispatcher:
    def __init__(self, registry: Registry, services: Services, matrix: Matrix) -> None:
        self._registry = registry
        self._services = services
        self._matrix = matrix

    async def handle(
        self, room_id: str, event: dict[str, Any], *, answer_unknown: bool, moderator_place: bool = False
    ) -> bool:
        """Handle a message if it is a command; True if it was one.

        ``answer_unknown``: whether an unknown ``!word`` gets a hint. Only in the bot's own rooms
        (DMs, the management room): in shared rooms it may be meant for another bot.
        ``moderator_place``: the management room, or a moderator's direct chat with the bot: the
        only places moderator commands run.
        """
        content = event.get("content") or {}
        body = content.get("body")
        if not isinstance(body, str) or not body.lstrip().startswith(("!", "> ")):
            return False
        t = self._services.t
        try:
            invocation = self._registry.parse(body[:MAX_COMMAND_LENGTH])
        except UnknownCommand as exc:
            if answer_unknown:
                await self._reply(room_id, event, t("cmd.unknown", command=exc.name[:64]))
            return answer_unknown
        except UsageError as exc:
            await self._reply(room_id, event, t("cmd.usage", usage=exc.command.usage()))
            return True
        if invocation is None:
            return False
        command = invocation.command
        sender = event["sender"]
        if command.moderator_only:
            if sender not in self._services.state.moderators:
                await self._services.store.record(
                    now_ms=self._services.clock(), actor=sender, action="command.refused", target=sender,
                    details={"command": command.name, "room_id": room_id, "event_id": event["event_id"]},
                )
                await self._reply(room_id, event, t("cmd.forbidden", command="!" + command.name))
                return True
            if not moderator_place:
                await self._reply(room_id, event, t("cmd.wrong_place", command="!" + command.name))
                return True
        ctx = Context(
            sender, room_id, event["event_id"], invocation.args, invocation.flags, self._services, replied_to(content),
            command.name,
        )
        try:
            answer = await command.run(ctx)
        except Refusal as exc:
            answer = t(exc.key, **exc.params)
        except Exception:
            log.exception("command !%s from %s failed", command.name, sender)
            answer = t("cmd.failed", command="!" + command.name)
        if answer:
            await self._reply(room_id, event, answer)
        return True

    async def _reply(self, room_id: str, event: dict[str, Any], text: str) -> None:
        event_id = event["event_id"]
        await self._matrix.send_notice(room_id, text, reply_to=event_id, txn=txn_id("reply", event_id))


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
