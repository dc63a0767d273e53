"""Checkpoints: the signed snapshot of the loop's models, restore, and following the learner.

A checkpoint writes the HMAC-signed snapshot (models + lifecycle evidence) and trims the
learn log it covers in one atomic write. Restoring = snapshot + replay of the log, so the
model after a crash equals the model before it. Scoring-only workers follow the learner by
reloading its snapshot whenever the checkpoint id changes.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from streamlearn.featurestore.backend import WriteBatch
from streamlearn.models import artifacts
from streamlearn.models.governance.lifecycle import Lifecycle
from streamlearn.models.modelset import ModelSet
from streamlearn.streams.loop import labels, served
from streamlearn.streams.loop.serde import dumps, loads
from streamlearn.streams.loop.status import status

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop

log = logging.getLogger(__name__)


def read_checkpoint(blob: bytes, key: bytes) -> tuple[ModelSet, Lifecycle | None]:
    """The models and lifecycle evidence of a signed loop checkpoint (refused if unsigned)."""
    state = artifacts.load(blob, key)
    models = state.get("models") if isinstance(state, dict) else None
    if not isinstance(models, ModelSet):
        raise artifacts.ArtifactError(f"checkpoint holds {type(state).__name__}, not the loop's models")
    return models, state.get("lifecycle")


async def checkpoint_locked(loop: OnlineLoop, extra_status: dict[str, Any] | None) -> bool:
    # checkpoints taken by the loop itself (decisions, commands) keep the worker's last extras
    if extra_status is None:
        extra_status = loop.last_extra
    else:
        loop.last_extra = extra_status
    if not loop.dirty and loop.log_len == 0:
        return False
    keys = loop.keys
    blob = artifacts.sign({"models": loop.models, "lifecycle": loop.lifecycle}, loop.artifact_key)
    wb = WriteBatch()
    wb.set(keys.checkpoint, blob, 0)
    loop.checkpoint_id = uuid.uuid4().hex.encode()
    wb.set(keys.checkpoint_id, loop.checkpoint_id, 0)
    wb.trims[keys.learn_log] = loop.log_len
    wb.set(keys.status, dumps(status(loop, extra_status)), 0)
    await loop.write(wb, "checkpoint")
    loop.log_len = 0
    loop.dirty = False
    loop.counters.checkpoints += 1
    return True


async def follow(loop: OnlineLoop) -> bool:
    """On a scoring-only worker: load the learner's newest snapshot. True if it changed."""
    if loop.is_learner:
        return False
    keys = loop.keys
    ckpt_id, = await loop.io(lambda: loop.backend.read_many([keys.checkpoint_id]), "follow")
    if ckpt_id is None or ckpt_id == loop.checkpoint_id:
        return False
    blob, = await loop.io(lambda: loop.backend.read_many([keys.checkpoint]), "follow")
    if blob is None:
        return False
    models, _ = read_checkpoint(blob, loop.artifact_key)
    async with loop.lock:
        loop.models, loop.checkpoint_id = models, ckpt_id
    return True


async def restore_locked(loop: OnlineLoop) -> int:
    """Load the last snapshot and replay the learn log after it. Returns labels replayed."""
    keys = loop.keys
    blob, ckpt_id = await loop.io(lambda: loop.backend.read_many([keys.checkpoint, keys.checkpoint_id]), "restore")
    loop.checkpoint_id = ckpt_id
    if blob is not None:
        models, lifecycle = read_checkpoint(blob, loop.artifact_key)
        if loop.lifecycle is not None and lifecycle is not None:
            loop.lifecycle = lifecycle  # resume the same evidence
        if models.champion_learner.spec != loop.champion.spec:
            log.warning("checkpoint champion spec %s differs from configured %s; resuming the checkpoint",
                        models.champion_learner.spec, loop.champion.spec)
        loop.models = models
    entries = [loads(e) for e in await loop.io(lambda: loop.backend.read_list(keys.learn_log), "restore log")]
    if entries:
        recs = await loop.io(lambda: loop.backend.read_many([keys.served(e["id"]) for e in entries]), "restore log")
        for e, rec in zip(entries, await served.decode_many(loop, recs, "restore log")):
            if rec is None:
                log.error("served vector for %s expired before replay; label skipped", e["id"])
                continue
            labels.learn_all(loop, e["y"], rec)
    loop.log_len = len(entries)
    loop.counters.labels_learned = max(lr.labels_learned for lr in loop.models.learners.values())
    return len(entries)
