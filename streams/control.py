"""Operator commands on a running worker's models, and the lifecycle records they produce.

Commands (from ``streamlearn models promote|rollback|retire|add``) are pushed to a Redis
list that the worker drains about twice a second; each is applied to the
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

import json
from typing import Any

from streamlearn.models.governance.lifecycle import record
from streamlearn.models.modelset import ModelSet

__all__ = ["OPS", "CommandError", "apply", "encode", "record"]

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
