"""Message catalogs: every user-facing string comes from here, in the configured language."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping

from bot.i18n import en, zh_CN

CATALOGS: dict[str, dict[str, str]] = {"en": en.MESSAGES, "zh-CN": zh_CN.MESSAGES}

# The range of times datetime can show (years 1 to 9999), in ms since the epoch.
_EARLIEST_MS, _LATEST_MS = -62_135_596_800_000, 253_402_300_799_999


def representable_ms(ms: int) -> int:
    """``ms`` brought into the range datetime can show. Durations have a maximum now, but a
    database written before that may hold an expiry in the year 20000: it must read as the last
    representable date, not fail the gate's answer (a 500) or an export."""
    return min(max(ms, _EARLIEST_MS), _LATEST_MS)


class Refusal(Exception):
    """An error meant for a person, as a catalog key and its parameters (translated on the way out)."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


class Translator:
    def __init__(self, language: str) -> None:
        if language not in CATALOGS:
            raise ValueError(f"no message catalog for language {language!r}")
        self.language = language
        self._messages = CATALOGS[language]

    def __call__(self, key: str, **params: object) -> str:
        return self._messages[key].format(**params)

    def refusal(self, message_key: str, params: Mapping[str, str]) -> str:
        """The user-facing reason of a refused action (a policy Decision's key and parameters).

        Times arrive as ``*_ms`` strings (the core has no notion of how people read time).
        """
        rest: dict[str, str] = {}
        for key, value in params.items():
            if key.endswith("_ms"):
                rest[key[:-3]] = self.time(int(value)) if value else self("sanction.permanent")
            elif key != "action":
                rest[key] = value
        return self(message_key, what=self(f"action.{params['action']}"), **rest)

    def span(self, ms: int) -> str:
        """A length of time, as people read it: 2d 3h, 5h 10m, 45m, 30s."""
        seconds = ms // 1000
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        if days:
            return f"{days}d {hours}h"
        if hours:
            return f"{hours}h {minutes}m"
        return f"{minutes}m" if minutes else f"{secs}s"

    def time(self, ms: int | None) -> str:
        """A timestamp in milliseconds, as people read it (UTC, to the minute)."""
        if ms is None:
            return self("time.never")
        return datetime.fromtimestamp(representable_ms(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
