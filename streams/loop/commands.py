"""Operator commands on a running worker's models, and the lifecycle records they produce.

Commands (from ``streamlearn models promote|rollback|retire|add``) are pushed to a Redis
list (:func:`encode`) that the learner drains about twice a second (:func:`drain`); each is
applied to the
:class:`~streamlearn.models.modelset.ModelSet` under the loop's lock, checkpointed at
once, and announced on the lifecycle topic. Automatic decisions (the gate, drift
actions) produce the same records through :func:`record`.

>>> from streamlearn.models.modelset import ModelSet
>>> ms = ModelSet.fresh("m", "logreg")
>>> [r["action"] for r in apply(ms, {"op": "add", "spec": "hat"}, now_ms=0)]
['challenger_started']
>>> [(r["action"], r["champion"]) for r in apply(ms, {"op": "promote", "version": 2}, now_ms=0)]
[('promoted', 2)]
>>> [(r["action"], r["champion"]) for r in apply(ms, {"op": "rollback"}, now_ms=0)]
[('rolled_back', 1)]
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from streamlearn.featurestore.backend import WriteBatch
from streamlearn.models.governance.lifecycle import record
from streamlearn.models.modelset import ModelSet
from streamlearn.streams.loop.serde import loads

if TYPE_CHECKING:
    from streamlearn.streams.loop.core import OnlineLoop

__all__ = ["OPS", "CommandError", "apply", "drain", "encode", "record"]
log = logging.getLogger(__name__)

OPS = ("add", "adopt", "promote", "canary", "rollback", "retire")


class CommandError(ValueError):
    pass


def apply(models: ModelSet, cmd: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """Apply one operator command; raise CommandError with a clear message if it cannot be."""
    op = cmd.get("op")
    reason = str(cmd.get("reason") or f"operator {op}")
    try:
        if op == "add":
            v = models.add_challenger(str(cmd["spec"]), reason)
            return [record(models, v, "challenger_started", reason, now_ms, spec=cmd["spec"], by="operator")]
        if op == "adopt":  # a registered model (e.g. batch-retrained); the loop resolved "model" from it
            v = int(cmd["version"])
            models.add_challenger(str(cmd["spec"]), reason, model=cmd["model"], version=v)
            return [record(models, v, "challenger_started", reason, now_ms, spec=cmd["spec"], by="registry")]
        if op == "promote":
            v = int(cmd["version"])
            old = models.promote(v, reason)
            return [record(models, v, "promoted", reason, now_ms, previous=old, by="operator")]
        if op == "canary":
            v, fraction = int(cmd["version"]), float(cmd.get("fraction", 0.1))
            models.start_canary(v, fraction, reason)
            return [record(models, v, "canary_started", reason, now_ms, fraction=fraction, by="operator")]
        if op == "rollback":
            before = models.canary.version if models.canary else models.champion
            now = models.rollback(reason)
            if now is None:
                raise CommandError("no previous champion to roll back to")
            return [record(models, before, "rolled_back", reason, now_ms, serving=now, by="operator")]
        if op == "retire":
            v = int(cmd["version"])
            models.retire(v, reason)
            return [record(models, v, "retired", reason, now_ms, by="operator")]
    except (KeyError, TypeError) as exc:
        raise CommandError(f"command {op!r} is missing or has a bad argument: {exc}") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    raise CommandError(f"unknown command {op!r}; known: {', '.join(OPS)}")


def encode(cmd: dict[str, Any]) -> bytes:
    if cmd.get("op") not in OPS:
        raise CommandError(f"unknown command {cmd.get('op')!r}; known: {', '.join(OPS)}")
    return json.dumps(cmd).encode()


async def drain(loop: OnlineLoop) -> int:
    """Apply queued operator commands; each change is checkpointed before it is announced."""
    key = loop.keys.control
    if not loop.is_learner:  # the learner's next checkpoint would undo it
        return 0
    raw = await loop.io(lambda: loop.backend.read_list(key), "control read")
    if not raw:
        return 0
    resolved: dict[int, Any] = {}
    for i, item in enumerate(raw):  # load adopted models before taking the lock
        try:
            cmd = loads(item)
            if cmd.get("op") == "adopt" and loop.model_loader is not None:
                resolved[i] = await asyncio.get_running_loop().run_in_executor(
                    None, loop.model_loader, int(cmd["version"]))
        except Exception as exc:  # noqa: BLE001 - refused below with the reason
            resolved[i] = exc
    async with loop.lock:
        now = int(loop.clock() * 1000)
        for i, item in enumerate(raw):
            cmd = None
            try:
                cmd = loads(item)
                if not isinstance(cmd, dict):  # valid JSON, but not a command
                    raise CommandError(f"a command is a JSON object, not {type(cmd).__name__}")
                if cmd.get("op") == "add" and loop.resolve_spec is not None and "spec" in cmd:
                    cmd["spec"] = loop.resolve_spec(str(cmd["spec"]))
                if cmd.get("op") == "adopt":
                    got = resolved.get(i)
                    if got is None or isinstance(got, Exception):
                        raise CommandError(f"cannot load registry version {cmd.get('version')}: {got}")
                    cmd["spec"], cmd["model"] = got
                for rec in apply(loop.models, cmd, now):
                    loop.outbox.put("lifecycle", rec)
            except (CommandError, ValueError) as exc:
                log.warning("refused operator command %r: %s", item[:200], exc)
                # the command's id lets the operator's CLI print this reason at once
                cid = {"command": str(cmd["id"])} if isinstance(cmd, dict) and cmd.get("id") else {}
                loop.outbox.put("lifecycle", record(
                    loop.models, loop.models.champion, "refused", f"bad command: {exc}", now, **cid))
        loop.dirty = True
        await loop.write(WriteBatch(trims={key: len(raw)}), "control trim")
        await loop.checkpoint_locked(None)
    return len(raw)
