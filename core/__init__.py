"""The layer under every other: configuration, storage, errors, hashing and redaction.
It imports nothing from the project."""
