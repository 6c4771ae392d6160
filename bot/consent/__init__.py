"""The agreement at registration (article 6 ¶2): Synapse's ``user_consent`` and the bot's agreement
as one document under one version.

- ``templates``: ``python -m bot consent-templates`` writes Synapse's policy pages from the texts
  the bot sends in chat.
- ``registration``: an account whose Synapse consent version is the agreement's has accepted it:
  recorded (method ``registration``), never prompted or refused.
- ``synapse``: the version Synapse asks for, compared with ``agreement.version`` at start-up.
"""
