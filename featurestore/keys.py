"""The persistent Redis key layout: every key the system writes, in one place.

These names are persistent data: a worker restarted on new code must find the entity
state, served vectors, learn log and checkpoints the old one wrote. They are explicit and
versioned through the prefix (``STREAMLEARN_REDIS_PREFIX``, default ``sl:v1``); never derive
them from code structure. ``tests/unit/featurestore/test_keys.py`` pins every one. (The
model registry, when stored in Redis, keeps its own keys under ``<prefix>:reg:``; see
:mod:`streamlearn.models.registry.store`.)

>>> k = Keys("sl:v1", "default")
>>> k.entity("card-7"), k.served("e1"), k.learned("e1"), k.checkpoint
('sl:v1:ent:card-7', 'sl:v1:srv:e1', 'sl:v1:m:default:lrn:e1', 'sl:v1:m:default:ckpt')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, for one model name."""

    prefix: str
    model: str
    # the feature view's namespace for entity state, served vectors and parked labels: ""
    # for the built-in views (the original key names), "<view>.v<version>" for a project's
    view: str = ""

    @classmethod
    def from_settings(cls, settings: Any, view: str = "") -> Keys:
        """The keys of the model a worker with these settings runs (``view``: its namespace,
        see :func:`streamlearn.project.view_namespace`)."""
        return cls(settings.redis_prefix, settings.model_name, view)

    # ---------------------------------------------------------------- shared by every model
    def entity(self, entity: str) -> str:
        """An entity's aggregate state (TTL: entity_ttl_s after its last event)."""
        return f"{self.prefix}:ent:{self.view}:{entity}" if self.view else f"{self.prefix}:ent:{entity}"

    def served(self, event_id: str) -> str:
        """The feature vector served for an event, with each model's prediction (served_ttl_s)."""
        return f"{self.prefix}:srv:{self.view}:{event_id}" if self.view else f"{self.prefix}:srv:{event_id}"

    def layout(self, digest: str) -> str:
        """The names a compact served record does not repeat (features, model versions,
        class labels), content-addressed by ``digest`` (:mod:`streamlearn.streams.loop.served`)."""
        return f"{self.prefix}:lay:{digest}"

    def pending(self, event_id: str) -> str:
        """A label that arrived before its event was served (pending_ttl_s)."""
        return f"{self.prefix}:pend:{self.view}:{event_id}" if self.view else f"{self.prefix}:pend:{event_id}"

    # ---------------------------------------------------------------- per model name
    def learned(self, event_id: str) -> str:
        """Marker: this model name learned the event's label (exactly once)."""
        return f"{self.prefix}:m:{self.model}:lrn:{event_id}"

    @property
    def learn_log(self) -> str:
        """Labels learned since the last checkpoint, replayed on restore."""
        return f"{self.prefix}:m:{self.model}:log"

    @property
    def checkpoint(self) -> str:
        """The signed snapshot of the loop's models and lifecycle evidence."""
        return f"{self.prefix}:m:{self.model}:ckpt"

    @property
    def checkpoint_id(self) -> str:
        """Changes with every checkpoint: scoring-only workers poll it to follow the learner."""
        return f"{self.prefix}:m:{self.model}:ckpt-id"

    @property
    def status(self) -> str:
        """The learner's counters and metrics (read by the demo, the CLI and /models)."""
        return f"{self.prefix}:m:{self.model}:status"

    @property
    def control(self) -> str:
        """Operator commands queued for the learner (``streamlearn models ...``)."""
        return f"{self.prefix}:m:{self.model}:control"

    def view_record(self, name: str, version: int) -> str:
        """The definition a feature view version was first served with (its fingerprint)."""
        return f"{self.prefix}:fv:{name}:v{version}"

    def receipt(self, writer: str) -> str:
        """One writer's last applied write token (at-most-once retries)."""
        return f"{self.prefix}:m:{self.model}:receipt:{writer}"

    # ---------------------------------------------------------------- per process / other stores
    def worker(self, app_id: str, pid: int) -> str:
        """One worker process's heartbeat and readiness (read by the demo and tests)."""
        return f"{self.prefix}:worker:{app_id}:{pid}"
