"""Canonical hashes: fingerprints, ids and keys that must be equal wherever they are computed."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(payload: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``payload``, truncated to ``length`` hex chars."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
