"""The gate: HTTP callbacks for synapse-http-antispam."""
