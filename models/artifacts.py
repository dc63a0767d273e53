"""Signed model artifacts.

A pickle is executable code, so an artifact is only ever unpickled after its
HMAC-SHA256 signature verifies with the key from settings. Format::

    b"SLA1" | 32-byte HMAC-SHA256(key, payload) | payload (pickle)

>>> blob = sign({"w": 1.5}, b"k")
>>> load(blob, b"k")
{'w': 1.5}
>>> load(blob[:-1] + b"x", b"k")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
streamlearn.models.artifacts.ArtifactError: artifact signature does not verify (tampered, or signed with another key)
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

MAGIC = b"SLA1"
_SIG = 32


class ArtifactError(RuntimeError):
    """An artifact that must not be loaded."""


def sign(obj: Any, key: bytes) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


def verify(blob: bytes, key: bytes) -> bytes:
    """Return the payload of a correctly signed artifact, else raise ArtifactError."""
    if blob[:4] != MAGIC or len(blob) < 4 + _SIG:
        raise ArtifactError("not a signed streamlearn artifact (missing SLA1 header); refusing to load")
    sig, payload = blob[4 : 4 + _SIG], blob[4 + _SIG :]
    if not hmac.compare_digest(sig, hmac.new(key, payload, hashlib.sha256).digest()):
        raise ArtifactError("artifact signature does not verify (tampered, or signed with another key)")
    return payload


def load(blob: bytes, key: bytes) -> Any:
    return pickle.loads(verify(blob, key))  # noqa: S301 - only after the HMAC verified
