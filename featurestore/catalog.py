"""The feature-view catalog: which definition each view version was first served with.

A served vector is only meaningful with the definition that computed it, and a model only
with the features it learned on. So a view's ``(name, version)`` is bound to its
definition (its fingerprint) the first time a worker serves it, in Redis
(``<prefix>:fv:<name>:v<version>``, see :mod:`.keys`). A worker whose definition differs
from the recorded one refuses to start: change the definition and bump the version, and
the new version serves from a fresh key namespace (``<name>.v<version>``) while the old
one's state stays readable and its recorded definition can still be replayed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from streamlearn.featurestore.declare import diff, view_from_dict
from streamlearn.featurestore.definitions import FeatureView
from streamlearn.featurestore.keys import Keys


class ViewChanged(ValueError):
    """A view version whose definition differs from the one it was first served with."""


def recorded(client: Any, prefix: str, name: str, version: int) -> dict[str, Any] | None:
    """The definition record (:meth:`FeatureView.record`) a version was first served with."""
    raw = client.get(Keys(prefix, "").view_record(name, version))
    return json.loads(raw) if raw else None


def versions(client: Any, prefix: str, name: str) -> list[int]:
    """Every recorded version of a view, ascending."""
    pattern = Keys(prefix, "").view_record(name, 0)[: -len("0")] + "*"
    out = []
    for key in client.scan_iter(match=pattern, count=1000):
        m = re.search(r":v(\d+)$", key.decode() if isinstance(key, bytes) else key)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def check_and_record(client: Any, prefix: str, view: FeatureView) -> bool:
    """Bind ``view``'s version to its definition on first use; raise :class:`ViewChanged` if
    another definition holds it. True if this call recorded it."""
    key = Keys(prefix, "").view_record(view.name, view.version)
    if client.set(key, json.dumps(view.record(), sort_keys=True), nx=True):
        return True
    old = recorded(client, prefix, view.name, view.version) or {}
    if old.get("fingerprint") == view.fingerprint:
        return False
    changes = "; ".join(diff(old, view.record())[:5]) or "definition changed"
    raise ViewChanged(
        f"feature view {view.name!r} version {view.version} was first served with another definition "
        f"(fingerprint {old.get('fingerprint')}, now {view.fingerprint}: {changes}); bump its version "
        f"(features.version = {view.version + 1}) to serve the new definition, or restore the old one")


def rebuild(record: dict[str, Any], resolve: Any = None) -> FeatureView:
    """The view a record describes (user functions resolved by import path), e.g. to replay
    history served by an older version."""
    return view_from_dict(record["spec"], resolve=resolve)
