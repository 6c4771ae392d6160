"""The in-process Synapse module (issue 10): ``module: bot.synapse.RulesModule``."""

from bot.synapse.module import RulesModule

__all__ = ["RulesModule"]
