"""From a message to a reply: parse, check the role, run, answer — in one place for every command."""

from __future__ import annotations

import logging
from typing import Any

from bot.commands.context import Context, Services, UserError
from bot.commands.registry import Registry, UnknownCommand, UsageError
from bot.matrix.client import Matrix, txn_id

log = logging.getLogger(__name__)

# Longer bodies are not commands anyone typed; parsing them is wasted work.
MAX_COMMAND_LENGTH = 16 * 1024


class Dispatcher:
    def __init__(self, registry: Registry, services: Services, matrix: Matrix) -> None:
        self._registry = registry
        self._services = services
        self._matrix = matrix

    async def handle(self, room_id: str, event: dict[str, Any], *, answer_unknown: bool) -> bool:
        """Handle a message if it is a command; True if it was one.

        ``answer_unknown``: whether an unknown ``!word`` gets a hint. Only in the bot's own rooms
        (DMs, the management room): in shared rooms it may be meant for another bot.
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
        if command.moderator_only and not self._services.state.is_exempt(sender):
            await self._reply(room_id, event, t("cmd.forbidden", command="!" + command.name))
            return True
        ctx = Context(sender, room_id, event["event_id"], invocation.args, invocation.flags, self._services)
        try:
            answer = await command.run(ctx)
        except UserError as exc:
            answer = str(exc)
        except Exception:
            log.exception("command !%s from %s failed", command.name, sender)
            answer = t("cmd.failed", command="!" + command.name)
        if answer:
            await self._reply(room_id, event, answer)
        return True

    async def _reply(self, room_id: str, event: dict[str, Any], text: str) -> None:
        event_id = event["event_id"]
        await self._matrix.send_notice(room_id, text, reply_to=event_id, txn=txn_id("reply", event_id))
