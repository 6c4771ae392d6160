# Synapse with the antispam module the gate needs.
FROM matrixdotorg/synapse:latest
RUN pip install --no-cache-dir synapse-http-antispam
