"""Mirror a loop's model decisions into the model registry (lineage + audit trail).

The loop decides synchronously, without I/O, and numbers versions in its
:class:`~streamlearn.models.modelset.ModelSet`; the registry records what happened:
every version (spec, parameters, parent, what it learned from, code version, metrics at
registration) and every stage transition with its reason. Records are applied in the
order the loop announced them, so registry version numbers stay equal to the loop's;
if they ever disagree (another deployment wrote under the same name), mirroring stops
with a clear error instead of recording a wrong lineage.

The registry's artifact of an online version is the model as registered; its live,
learned state is the loop's signed checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from streamlearn.models.modelset import ModelSet
from streamlearn.models.registry.versions import ModelRegistry

log = logging.getLogger(__name__)


class MirrorError(RuntimeError):
    pass


class RegistryMirror:
    def __init__(self, registry: ModelRegistry, trained_on: dict[str, Any]) -> None:
        self.registry = registry
        self.trained_on = trained_on  # e.g. {"source": "live", "events": topic, "feedback": topic}

    def _known(self, name: str) -> set[int]:
        return {mv.version for mv in self.registry.list(name)}

    def bootstrap(self, models: ModelSet) -> None:
        """Register the versions the loop already runs (first start, or a registry added later)."""
        known = self._known(models.name)
        for v in sorted(models.learners):
            if v not in known:
                self._register(models, v, "running at start")
        champ = self.registry.champion(models.name)
        if champ is None or champ.version != models.champion:
            self.registry.promote(models.name, models.champion, "champion at start", by="worker")

    def _register(self, models: ModelSet, version: int, reason: str, by: str = "worker") -> None:
        learner = models.learners[version]
        has_champion = self.registry.champion(models.name) is not None
        mv = self.registry.register(
            models.name, learner.model, spec=learner.spec,
            parent=None if version == 1 else models.champion,
            trained_on={**self.trained_on, "from_label": models.champion_learner.labels_learned},
            metrics=learner.metric_values(), stage="shadow" if has_champion or version != 1 else "champion",
            reason=reason, by=by)
        if mv.version != version:
            raise MirrorError(f"registry numbered {models.name} v{mv.version} but the loop runs v{version}: "
                              "another deployment shares this registry name; not mirroring")

    def apply(self, models: ModelSet, records: list[dict[str, Any]]) -> None:
        """Apply lifecycle-topic records (in order) to the registry."""
        reg, name = self.registry, models.name
        for r in records:
            v, action, reason = r["version"], r["action"], r["reason"]
            by = r["details"].get("by", "lifecycle")
            if action == "challenger_started":
                if v not in self._known(name) and v in models.learners:
                    self._register(models, v, reason, by)
            elif action == "canary_started":
                reg.set_stage(name, v, "canary", reason, by)
            elif action == "promoted":
                reg.promote(name, v, reason, by)
            elif action == "rolled_back":
                mv = reg.get(name, v)
                if mv.stage == "canary":
                    reg.set_stage(name, v, "shadow", reason, by)
                elif mv.stage == "champion":
                    reg.rollback(name, reason, by)
            elif action == "retired":
                reg.retire(name, v, reason, by)
            # refused / retrain_requested change no stage: they live on the lifecycle topic
