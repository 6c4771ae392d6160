"""The pure policy core: no I/O, no clock, no Matrix client. Imports nothing else of the project."""

from bot.policy.decide import decide
from bot.policy.model import ALLOW, Action, ActionKind, Decision, Reason, Source
from bot.policy.state import PolicyState

__all__ = ["ALLOW", "Action", "ActionKind", "Decision", "PolicyState", "Reason", "Source", "decide"]
