"""The layer under every other: configuration, storage, errors, hashing, redaction and
public signatures. It imports nothing from the project."""
