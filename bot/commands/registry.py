"""Commands declared as data, and the one parser for all of them.

A command is a name, its aliases (Chinese names among them), a summary for !help, typed
parameters, flags and the role it needs. ``Registry.parse`` turns a message body into an
``Invocation`` or raises ``UnknownCommand`` / ``UsageError``; handlers never parse text themselves.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable

if TYPE_CHECKING:
    from bot.commands.context import Context

USER_ID_RE = re.compile(r"^@[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
PREFIX = "!"


class ParamKind(enum.Enum):
    USER_ID = "user_id"  # a full Matrix user ID, nothing else
    WORD = "word"  # one token
    TEXT = "text"  # the rest of the line, verbatim


@dataclass(frozen=True)
class Param:
    name: str
    kind: ParamKind
    required: bool = True

    def usage(self) -> str:
        label = f"{self.name}…" if self.kind is ParamKind.TEXT else self.name
        return f"<{label}>" if self.required else f"[{label}]"


Handler = Callable[["Context"], Awaitable[str | None]]


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    summary_key: str
    run: Handler
    params: tuple[Param, ...] = ()
    flags: tuple[str, ...] = ()
    moderator_only: bool = False

    def usage(self) -> str:
        parts = [PREFIX + self.name, *(p.usage() for p in self.params), *(f"[--{f}]" for f in self.flags)]
        return " ".join(parts)


@dataclass(frozen=True)
class Invocation:
    command: Command
    args: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()


class UnknownCommand(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class UsageError(Exception):
    def __init__(self, command: Command) -> None:
        super().__init__(command.name)
        self.command = command


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted "> <@user> …" lines clients put in front of a reply's body."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    return "\n".join(lines).lstrip("\n")


class Registry:
    def __init__(self, commands: list[Command]) -> None:
        self.commands = list(commands)
        self._by_name: dict[str, Command] = {}
        for command in commands:
            for name in (command.name, *command.aliases):
                key = name.casefold()
                if key in self._by_name:
                    raise ValueError(f"command name {name!r} is declared twice")
                self._by_name[key] = command

    def parse(self, body: str) -> Invocation | None:
        """None when the body is not a command at all."""
        text = strip_reply_fallback(body).strip()
        if not text.startswith(PREFIX) or len(text) == len(PREFIX):
            return None
        head, _, rest = text[len(PREFIX):].partition(" ")
        head = head.split("\n", 1)[0]
        if not head or head.startswith(PREFIX):
            return None
        command = self._by_name.get(head.casefold())
        if command is None:
            raise UnknownCommand(PREFIX + head)
        return self._bind(command, rest.strip())

    def _bind(self, command: Command, rest: str) -> Invocation:
        tokens = rest.split()
        flags = frozenset(t[2:] for t in tokens if t.startswith("--"))
        if not flags <= set(command.flags):
            raise UsageError(command)
        words = [t for t in tokens if not t.startswith("--")]
        args: dict[str, str] = {}
        for param in command.params:
            if param.kind is ParamKind.TEXT:
                if words:
                    args[param.name] = " ".join(words)
                    words = []
            elif words:
                value = words.pop(0)
                if param.kind is ParamKind.USER_ID and not USER_ID_RE.match(value):
                    raise UsageError(command)
                args[param.name] = value
            if param.required and param.name not in args:
                raise UsageError(command)
        if words:
            raise UsageError(command)
        return Invocation(command, args, flags)
