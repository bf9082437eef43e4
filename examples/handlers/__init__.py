"""Example handlers; run one with ``python -m schedulezero_handler examples.handlers.echo:Echo``."""
