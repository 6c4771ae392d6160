"""The in-process Synapse module (issue 10): ``module: bot.synapse.RulesModule``.

``RulesModule`` is imported when it is asked for (Synapse's module loader does
``getattr(import_module("bot.synapse"), "RulesModule")``), not with the package: the bot's own
processes use ``bot.synapse.replica`` (a standby follows the active with it) and must not import
Twisted, whose ``twisted.internet.endpoints`` takes systemd's ``LISTEN_FDS`` out of the environment
at import, before the gate could claim the socket it was given.
"""

from typing import Any

__all__ = ["RulesModule"]


def __getattr__(name: str) -> Any:
    if name == "RulesModule":
        from bot.synapse.module import RulesModule

        return RulesModule
    raise AttributeError(f"module 'bot.synapse' has no attribute {name!r}")
