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
import io
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


# Where classes lived when older artifacts were pickled. Checkpoints and registry versions
# are persistent data: moving a class must never orphan them, so every move is recorded
# here (pinned by tests/unit/models/test_artifacts.py with artifacts written before the move).
MOVED_MODULES: dict[str, str] = {
    "streamlearn.models.spec": "streamlearn.models.estimators.spec",
    "streamlearn.models.learner": "streamlearn.models.estimators.learner",
    "streamlearn.replay.batchmodel": "streamlearn.models.estimators.batch",
    "streamlearn.models.gate": "streamlearn.models.governance.gate",
    "streamlearn.models.sequential": "streamlearn.models.governance.sequential",
    "streamlearn.models.canary": "streamlearn.models.governance.canary",
    "streamlearn.models.drift": "streamlearn.models.governance.drift",
    "streamlearn.models.lifecycle": "streamlearn.models.governance.lifecycle",
    "streamlearn.models.registry": "streamlearn.models.registry.versions",
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


def load(blob: bytes, key: bytes) -> Any:
    # only after the HMAC verified: a pickle is code
    return _Unpickler(io.BytesIO(verify(blob, key))).load()
