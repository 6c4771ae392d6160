"""Real-name verification (issue 9, article 6 ¶1): keys, verifiers, the service."""
