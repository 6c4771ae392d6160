"""Commands declared as data, and the one parser for all of them.

A command is a name, its aliases (Chinese names among them), a summary for !help, typed
parameters, flags and the role it needs. ``Registry.parse`` turns a message body into an
``Invocation`` or raises ``UnknownCommand`` / ``UsageError``; handlers never parse text themselves.

``--dry-run`` is declared here once, for every command, and is read anywhere in the arguments. A
command that changes anything declares a ``preview``: on a dry run the preview runs *instead of*
the handler, so the code that writes is never reached; it answers what would happen and may only
read. A command without a preview only reads: on a dry run it answers as usual, with a line saying
that it changes nothing anyway.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from bot.policy.sanctions import Rate, parse_duration

if TYPE_CHECKING:
    from bot.commands.context import Context

USER_ID_RE = re.compile(r"^@[^:\s]+:[A-Za-z0-9.\-\[\]:]+$")
PREFIX = "!"
# The one flag every command takes: say what would happen, change nothing.
DRY_RUN = "dry-run"


class ParamKind(enum.Enum):
    USER_ID = "user_id"  # a full Matrix user ID, nothing else
    WORD = "word"  # one token
    TEXT = "text"  # the rest of the line, verbatim
    DURATION = "duration"  # 30m, 12h, 7d, 4w, permanent/永久 -> ms or None
    RATE = "rate"  # N/PERIOD -> Rate
    CASE = "case"  # 12 or #12 -> int
    CHOICE = "choice"  # one of Param.choices
    # The rest of the line is a command of its own (`!resolve 3 close @x:hs abuse --erase`):
    # kept verbatim, its --flags included, for the handler to parse.
    COMMAND = "command"


def _convert(kind: ParamKind, value: str, choices: tuple[str, ...]) -> Any:
    """The typed value of one token; ValueError when it is not of the kind."""
    if kind is ParamKind.USER_ID:
        if not USER_ID_RE.match(value):
            raise ValueError(value)
        return value
    if kind is ParamKind.DURATION:
        return parse_duration(value)
    if kind is ParamKind.RATE:
        return Rate.parse(value)
    if kind is ParamKind.CASE:
        number = value.removeprefix("#")
        if not number.isdigit() or len(number) > 12:
            raise ValueError(value)
        return int(number)
    if kind is ParamKind.CHOICE and value.casefold() not in choices:
        raise ValueError(value)
    return value


@dataclass(frozen=True)
class Param:
    name: str
    kind: ParamKind
    required: bool = True
    choices: tuple[str, ...] = ()

    def usage(self) -> str:
        rest = self.kind in (ParamKind.TEXT, ParamKind.COMMAND)
        label = f"{self.name}…" if rest else "|".join(self.choices) or self.name
        return f"<{label}>" if self.required else f"[{label}]"


Handler = Callable[["Context"], Awaitable[str | None]]


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    summary_key: str
    handler: Handler
    params: tuple[Param, ...] = ()
    flags: tuple[str, ...] = ()
    # Flags that take a value (`--rate 3/1h`); the value lands in args under the flag's name.
    options: tuple[Param, ...] = ()
    moderator_only: bool = False
    # Open to everyone without arguments, to moderators only with them (`!verify` alone says how
    # to verify; `!verify <user> …` records a verification).
    moderator_only_with_args: bool = False
    # What a dry run answers instead of running the handler; None: the command only reads.
    preview: Handler | None = None

    @property
    def changes_state(self) -> bool:
        return self.preview is not None

    def for_moderators(self, args: dict[str, Any]) -> bool:
        """Whether this invocation needs a moderator, in a moderator's place."""
        return self.moderator_only or (self.moderator_only_with_args and bool(args))

    async def run(self, ctx: "Context") -> str | None:
        """The handler's answer; on a dry run, the preview's (the handler never runs)."""
        if DRY_RUN not in ctx.flags:
            return await self.handler(ctx)
        if self.preview is not None:
            return await self.preview(ctx)
        answer = await self.handler(ctx)
        note = ctx.t("dry_run.read_only", command=PREFIX + self.name)
        return f"{answer}\n\n{note}" if answer else note

    def usage(self) -> str:
        parts = [
            PREFIX + self.name,
            *(p.usage() for p in self.params),
            *(f"[--{o.name} {o.name.upper()}]" for o in self.options),
            *(f"[--{f}]" for f in self.flags),
            *((f"[--{DRY_RUN}]",) if self.changes_state else ()),
        ]
        return " ".join(parts)


def moderator_command(
    name: str, alias: str, run: Handler, params: tuple[Param, ...] = (), preview: Handler | None = None,
    **kwargs: Any,
) -> Command:
    """A command for moderators only, with its one Chinese alias and its catalog summary."""
    return Command(name, (alias,), f"cmd.{name}.summary", run, params=params, moderator_only=True, preview=preview,
                   **kwargs)


@dataclass(frozen=True)
class Invocation:
    command: Command
    args: dict[str, Any] = field(default_factory=dict)
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

    def find(self, name: str) -> Command:
        return self._by_name[name.casefold()]

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
        options = {o.name: o for o in command.options}
        # A nested command's own flags belong to it, not to this one.
        nested = any(p.kind is ParamKind.COMMAND for p in command.params)
        args: dict[str, Any] = {}
        flags: set[str] = set()
        words: list[str] = []
        while tokens:
            token = tokens.pop(0)
            if not token.startswith("--") or len(token) == 2:
                words.append(token)
                continue
            name, has_value, value = token[2:].partition("=")
            if name == DRY_RUN and not has_value:
                flags.add(DRY_RUN)
            elif name in options:
                if not has_value:
                    if not tokens:
                        raise UsageError(command)
                    value = tokens.pop(0)
                args[name] = self._typed(command, options[name], value)
            elif name in command.flags and not has_value:
                flags.add(name)
            elif nested:
                words.append(token)
            else:
                raise UsageError(command)
        for param in command.params:
            if param.kind in (ParamKind.TEXT, ParamKind.COMMAND):
                if words:
                    args[param.name] = " ".join(words)
                    words = []
            elif words:
                args[param.name] = self._typed(command, param, words.pop(0))
            if param.required and param.name not in args:
                raise UsageError(command)
        if words:
            raise UsageError(command)
        return Invocation(command, args, frozenset(flags))

    @staticmethod
    def _typed(command: Command, param: Param, value: str) -> Any:
        try:
            return _convert(param.kind, value, param.choices)
        except ValueError:
            raise UsageError(command) from None
