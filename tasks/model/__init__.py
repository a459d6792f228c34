"""The model client: the wire contract (client.py, wire.py), its HTTP/1.1 transport, retries,
the shared limiter (and fleet-wide limits), model profiles and prices (data: profiles.toml),
usage and cost, the instructions sent. Knows nothing of runs or items. Imports: errors,
options, bounded, inputs (URL redaction), audio (codecs), text (words to speak).
"""
