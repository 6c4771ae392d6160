"""The module's configuration (the ``config:`` block under ``bot.synapse.RulesModule`` in
homeserver.yaml), checked at Synapse's start with errors that name the key.

Plain Python on purpose: this runs inside Synapse, whose environment has no pydantic-settings
(importing the bot's own settings would pull aiohttp and the rest of the bot in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from bot.i18n import CATALOGS

# Every callback the module registers (and only those: a ``fail`` mode for one it does not
# register would be a setting that does nothing), with what it does when it cannot decide from a fresh
# replica: before the first snapshot, or once the replica is older than max_staleness.
# The defaults are those of the shipped HTTP module config: closed for everything a user could
# use to get round the rules, open for what must never lock people out (joining to read, logging
# in, which only greets) and for registration, which decides nothing about content.
CALLBACKS = (
    "check_event_for_spam",
    "user_may_invite",
    "user_may_send_3pid_invite",
    "user_may_create_room",
    "user_may_publish_room",
    "user_may_join_room",
    "check_login_for_spam",
    "check_registration_for_spam",
)
DEFAULT_FAIL = {
    "check_event_for_spam": "closed",
    "user_may_invite": "closed",
    "user_may_send_3pid_invite": "closed",
    "user_may_create_room": "closed",
    "user_may_publish_room": "closed",
    "user_may_join_room": "open",
    "check_login_for_spam": "open",
    "check_registration_for_spam": "open",
}
KNOWN_KEYS = frozenset({
    "bot_url", "token", "language", "poll_timeout", "max_staleness", "fail", "stale_after",
    "ratecap_timeout", "report_interval", "snapshot_retry_max",
    "consent_timeout",
})


class ConfigError(ValueError):
    """The module's config is not valid; the message names the key."""


@dataclass(frozen=True)
class ModuleConfig:
    bot_url: str  # the bot's gate, e.g. http://127.0.0.1:8009 (no path)
    token: str  # the bot's gate.token
    language: str = "zh-CN"
    poll_timeout: float = 25.0  # s the bot may hold a changes long-poll open
    # callback -> s since the last successful poll after which it follows ``fail`` (absent: never)
    max_staleness: Mapping[str, float] = field(default_factory=dict)
    fail: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_FAIL))
    stale_after: float = 60.0  # s without a successful poll before Synapse's log says so
    ratecap_timeout: float = 0.5  # s to wait for the bot's rate-cap answer before deciding alone
    report_interval: float = 0.2  # s between batches of reports to the bot
    snapshot_retry_max: float = 2.0  # s: the longest wait between snapshot attempts
    # s to wait for the bot's answer whether an account accepted the agreement at registration,
    # before refusing it for not having agreed (the bot's own admin-API lookup waits up to 2 s)
    consent_timeout: float = 3.0

    def fails_open(self, callback: str) -> bool:
        return self.fail[callback] == "open"


def _seconds(value: Any, key: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key} must be a number of seconds >= {minimum:g}, not {value!r}")
    return float(value)


def _callback_map(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping of callback name to value, not {value!r}")
    unknown = sorted(str(name) for name in value if name not in CALLBACKS)
    if unknown:
        raise ConfigError(f"{key}: unknown callback {unknown[0]!r}; known: {', '.join(CALLBACKS)}")
    return dict(value)


def parse_config(raw: Any) -> ModuleConfig:
    """The module's config from homeserver.yaml, or ConfigError naming the bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError("the module's config must be a mapping with at least bot_url and token")
    unknown = sorted(str(key) for key in raw if key not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(KNOWN_KEYS))}")
    bot_url = raw.get("bot_url")
    if not isinstance(bot_url, str) or not bot_url:
        raise ConfigError("bot_url is required: the bot's gate address, e.g. http://127.0.0.1:8009")
    parts = urlsplit(bot_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise ConfigError(f"bot_url must be http(s)://host:port with no path, not {bot_url!r}")
    token = raw.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ConfigError("token is required: the bot's gate.token")
    language = raw.get("language", "zh-CN")
    if language not in CATALOGS:
        raise ConfigError(f"language must be one of {', '.join(sorted(CATALOGS))}, not {language!r}")
    fail = dict(DEFAULT_FAIL)
    for callback, mode in _callback_map(raw.get("fail", {}), "fail").items():
        if mode not in ("open", "closed"):
            raise ConfigError(f"fail.{callback} must be 'open' or 'closed', not {mode!r}")
        fail[callback] = mode
    max_staleness = {
        callback: _seconds(seconds, f"max_staleness.{callback}")
        for callback, seconds in _callback_map(raw.get("max_staleness", {}), "max_staleness").items()
    }
    return ModuleConfig(
        bot_url=bot_url.rstrip("/"),
        token=token,
        language=language,
        poll_timeout=_seconds(raw.get("poll_timeout", 25.0), "poll_timeout", minimum=1.0),
        max_staleness=max_staleness,
        fail=fail,
        stale_after=_seconds(raw.get("stale_after", 60.0), "stale_after", minimum=1.0),
        ratecap_timeout=_seconds(raw.get("ratecap_timeout", 0.5), "ratecap_timeout", minimum=0.01),
        report_interval=_seconds(raw.get("report_interval", 0.2), "report_interval", minimum=0.01),
        snapshot_retry_max=_seconds(raw.get("snapshot_retry_max", 2.0), "snapshot_retry_max", minimum=0.1),
        consent_timeout=_seconds(raw.get("consent_timeout", 3.0), "consent_timeout", minimum=0.01),
    )
