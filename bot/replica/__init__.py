"""The replica of the policy state that the Synapse module decides from (issue 10): the protocol,
the bot's change log and its HTTP publisher."""
